-- ARGV: prefix. Orphans the members of every node whose heartbeat expired (see orphan_node),
-- then removes the orphans whose resume TTL passed (reason timeout, shutdown or overflow).
local reaped = 0
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'node:' .. n .. ':alive') == 0 then
    orphan_node(n, 'timeout')
    reaped = reaped + 1
  end
end
for _, s in ipairs(redis.call('ZRANGEBYSCORE', ORPHANS, '-inf', now_ms())) do
  redis.call('ZREM', ORPHANS, s)
  local f = redis.call('HMGET', sess_key(s), 'room', 'peer', 'ow')
  if f[1] and f[2] then
    local m = dec(redis.call('HGET', members_key(f[1]), f[2]))
    if m and m.s == s then
      remove(f[1], f[2], m, f[3] or 'timeout')
    else
      redis.call('DEL', sess_key(s), mbox_key(s))
    end
  end
end
return reaped
