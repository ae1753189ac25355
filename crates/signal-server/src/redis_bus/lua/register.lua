-- ARGV: prefix, session, resume token, perms, token exp ('' = none), resume TTL ms, mailbox max
-- msgs, mailbox max bytes, tenant ('' = none). Completes the shared record `join` created (after a join, again after a
-- token refresh). Only a hash of the token is stored.
local k = sess_key(ARGV[2])
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'tok', redis.sha1hex(ARGV[3]), 'perms', ARGV[4], 'exp', ARGV[5],
  'ttl', ARGV[6], 'mm', ARGV[7], 'mx', ARGV[8], 'tn', ARGV[9] or '')
return 1
