-- ARGV: prefix. Removes the members of every node whose heartbeat expired (reason timeout).
local reaped = 0
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'node:' .. n .. ':alive') == 0 then
    reap_node(n, 'timeout')
    reaped = reaped + 1
  end
end
return reaped
