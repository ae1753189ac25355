-- ARGV: prefix, node, ttl ms. Returns 1 when the node was not registered (first beat, or Redis
-- lost its data, or another node reaped this one): the caller then restores its members.
redis.call('SET', P .. 'node:' .. ARGV[2] .. ':alive', '1', 'PX', tonumber(ARGV[3]))
return redis.call('SADD', P .. 'nodes', ARGV[2])
