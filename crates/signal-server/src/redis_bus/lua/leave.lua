-- ARGV: prefix, room, peer, session, reason, node. Idempotent; a newer session of the peer stays,
-- and so does a session another node took over (resume) since `node` asked.
local r, peer, s, reason, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local m = dec(redis.call('HGET', members_key(r), peer))
if not m or m.s ~= s or m.n ~= node then return 0 end
remove(r, peer, m, reason)
return 1
