-- ARGV: prefix, session, resume token, client lastSeq, node. Moves the session to `node` if the
-- token matches and the session still holds its peer id: the member record and the session now
-- point at `node`, the old node (if another) gets `evict` session_replaced, the orphan mark goes,
-- messages up to lastSeq are dropped, and `resumed` (with every later message) is published to
-- `node` before anything else can reach the session there. Otherwise `resume_rejected`.
local s, token, last, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = sess_key(s)
local function reject()
  redis.call('PUBLISH', chan(node), cjson.encode({t = 'resume_rejected', session = s}))
  return 0
end
local f = redis.call('HMGET', k, 'tok', 'room', 'peer', 'ow', 'rcv', 'perms', 'exp', 'tn')
if not f[1] or f[1] ~= redis.sha1hex(token) or f[4] == 'overflow' then return reject() end
local r, peer = f[2], f[3]
local m = dec(redis.call('HGET', members_key(r), peer))
if not m or m.s ~= s then return reject() end
local old = m.n
if old ~= node then
  m.n = node
  redis.call('HSET', members_key(r), peer, cjson.encode(m))
  redis.call('SADD', rooms_key(node), r)
  local still = false
  for _, x in ipairs(list(r)) do
    if x.m.n == old then still = true end
  end
  if not still then redis.call('SREM', rooms_key(old), r) end
  redis.call('PUBLISH', chan(old), cjson.encode({t = 'evict', session = s, code = 'session_replaced'}))
end
redis.call('HDEL', k, 'o', 'ow')
redis.call('ZREM', ORPHANS, s)
trim(s, last)
local parts = {}
for _, x in ipairs(list(r)) do
  parts[#parts + 1] = cjson.encode({peer = x.peer, session = x.m.s, idx = x.m.i, sub = x.m.b})
end
local missed = {}
for _, e in ipairs(redis.call('XRANGE', mbox_key(s), '-', '+')) do
  missed[#missed + 1] = '{"seq":' .. string.match(e[1], '^(%d+)') .. ',"e":' .. e[2][2] .. '}'
end
local exp = 'null'
if f[7] and f[7] ~= '' then exp = f[7] end
local tenant = 'null'
if f[8] and f[8] ~= '' then tenant = cjson.encode(f[8]) end
redis.call('PUBLISH', chan(node), '{"t":"resumed","session":' .. cjson.encode(s) ..
  ',"room":' .. cjson.encode(r) .. ',"peer":' .. cjson.encode(peer) .. ',"idx":' .. m.i ..
  ',"sub":' .. m.b .. ',"perms":' .. cjson.encode(f[6] or '') .. ',"exp":' .. exp .. ',"tenant":' .. tenant ..
  ',"rcv":' .. (f[5] or '0') .. ',"seq":' .. (redis.call('HGET', k, 'seq') or '0') ..
  ',"members":[' .. table.concat(parts, ',') .. '],"missed":[' .. table.concat(missed, ',') .. ']}')
return 1
