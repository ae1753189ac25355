-- ARGV: prefix, room, peer, session, node, subscribe (0/1), max peers.
-- Atomic check-and-insert: peer ids are unique per room and the capacity holds across nodes.
local r, peer, s, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local sub, max = tonumber(ARGV[6]), tonumber(ARGV[7])
local function reject(code)
  redis.call('PUBLISH', chan(node),
    cjson.encode({t = 'rejected', session = s, peer = peer, code = code, max = max}))
  return code
end
if redis.call('HEXISTS', members_key(r), peer) == 1 then return reject('peer_id_taken') end
if redis.call('HLEN', members_key(r)) >= max then return reject('room_full') end
local before = list(r)
local idx = redis.call('INCR', seq_key(r))
redis.call('HSET', members_key(r), peer, cjson.encode({s = s, n = node, i = idx, b = sub}))
redis.call('SADD', rooms_key(node), r)
-- The shared record: from now on every message to the session is numbered here.
redis.call('DEL', mbox_key(s))
redis.call('HSET', sess_key(s), 'room', r, 'peer', peer, 'i', idx, 'seq', 0, 'b', 0)
local ev = cjson.encode({t = 'joined', room = r, peer = peer, session = s, idx = idx, sub = sub})
local parts, nodes, seqs = {}, {[node] = true}, {}
for _, x in ipairs(before) do
  parts[#parts + 1] = cjson.encode({peer = x.peer, session = x.m.s, idx = x.m.i, sub = x.m.b})
  nodes[x.m.n] = true
  seqs[x.m.s] = number(x.m.s, ev)
end
redis.call('PUBLISH', chan(node), '{"t":"accepted","room":' .. cjson.encode(r) ..
  ',"session":' .. cjson.encode(s) .. ',"idx":' .. idx ..
  ',"members":[' .. table.concat(parts, ',') .. ']}')
local out = with_seqs(ev, seqs)
for n in pairs(nodes) do redis.call('PUBLISH', chan(n), out) end
return 'ok'
