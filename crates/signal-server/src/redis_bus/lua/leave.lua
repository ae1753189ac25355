-- ARGV: prefix, room, peer, session, reason. Idempotent; a newer session of the peer stays.
local r, peer, s, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local m = dec(redis.call('HGET', members_key(r), peer))
if not m or m.s ~= s then return 0 end
remove(r, peer, m, reason)
return 1
