-- ARGV: prefix, session, seq. The client acknowledged up to seq: drop those shared messages.
if redis.call('EXISTS', sess_key(ARGV[2])) == 0 then return 0 end
return trim(ARGV[2], ARGV[3])
