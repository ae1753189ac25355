-- ARGV: prefix, room, peer, session, node, join index, subscribe (0/1).
-- Puts back a member this node still hosts (after Redis lost its data, or after another node
-- reaped this one) and announces it to the room's nodes (they ignore what they already know).
-- Returns 0 when another session took the peer id meanwhile.
local r, peer, s, node, idx, sub = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local v = redis.call('HGET', members_key(r), peer)
if v then
  local m = dec(v)
  if m and m.s == s and m.n == node then
    -- Reaped while alive: the session is ours again, not an orphan.
    redis.call('HDEL', sess_key(s), 'o', 'ow')
    redis.call('ZREM', ORPHANS, s)
    redis.call('SADD', rooms_key(node), r)
    return 1
  end
  return 0
end
redis.call('HSET', members_key(r), peer, cjson.encode({s = s, n = node, i = idx, b = sub}))
if tonumber(redis.call('GET', seq_key(r)) or '0') < idx then
  redis.call('SET', seq_key(r), idx)
end
redis.call('SADD', rooms_key(node), r)
local nodes = {}
for _, x in ipairs(list(r)) do nodes[x.m.n] = true end
local ev = cjson.encode({t = 'joined', room = r, peer = peer, session = s, idx = idx, sub = sub})
for n in pairs(nodes) do redis.call('PUBLISH', chan(n), ev) end
return 1
