-- ARGV: prefix, room, from, origin session, to ('' = broadcast), signal JSON, ref seq ('' = none),
-- origin node. The signal JSON and ref seq come from floe and are spliced in verbatim.
local r, from, origin, to, msg, ref, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
-- The highest client seq routed, for `resumed.received` after a resume on another node.
if ref ~= '' then
  local k = sess_key(origin)
  if redis.call('EXISTS', k) == 1 and tonumber(redis.call('HGET', k, 'rcv') or '0') < tonumber(ref) then
    redis.call('HSET', k, 'rcv', ref)
  end
end
local function deliver(m, b)
  local ev = '{"t":"deliver","to":' .. cjson.encode(m.s) ..
    ',"from":' .. cjson.encode(from) .. ',"b":' .. b .. ',"msg":' .. msg .. '}'
  local seq = number(m.s, ev)
  if seq then ev = ev:sub(1, -2) .. ',"seq":' .. seq .. '}' end
  redis.call('PUBLISH', chan(m.n), ev)
end
if to ~= '' then
  local m = dec(redis.call('HGET', members_key(r), to))
  if m and m.b == 1 and to ~= from then
    deliver(m, 0)
    return 1
  end
  local u = '{"t":"undeliverable","origin":' .. cjson.encode(origin) .. ',"to":' .. cjson.encode(to)
  if ref ~= '' then u = u .. ',"ref_seq":' .. ref end
  redis.call('PUBLISH', chan(node), u .. '}')
  return 0
end
local n = 0
for _, x in ipairs(list(r)) do
  if x.m.b == 1 and x.peer ~= from then
    deliver(x.m, 1)
    n = n + 1
  end
end
return n
