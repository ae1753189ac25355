-- ARGV: prefix, node. Graceful shutdown (drain): the node's members stay for their resume TTL,
-- resumable on another node (their clients got `go_away`); members without a shared session
-- leave now (reason shutdown). Then the node is forgotten.
orphan_node(ARGV[2], 'shutdown')
redis.call('DEL', P .. 'node:' .. ARGV[2] .. ':alive')
return 1
