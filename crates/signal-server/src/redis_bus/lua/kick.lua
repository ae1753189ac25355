-- ARGV: prefix, room, origin session, peer, origin node.
local r, origin, peer, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local m = dec(redis.call('HGET', members_key(r), peer))
if not m then
  redis.call('PUBLISH', chan(node), cjson.encode({t = 'undeliverable', origin = origin, to = peer}))
  return 0
end
redis.call('PUBLISH', chan(m.n), cjson.encode({t = 'evict', session = m.s, code = 'kicked'}))
remove(r, peer, m, 'kicked')
return 1
