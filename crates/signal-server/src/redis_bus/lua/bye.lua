-- ARGV: prefix, node. Graceful shutdown: remove this node's members (reason shutdown) at once, so
-- that its clients can join again on another node with the same peer ids.
reap_node(ARGV[2], 'shutdown')
redis.call('DEL', P .. 'node:' .. ARGV[2] .. ':alive')
return 1
