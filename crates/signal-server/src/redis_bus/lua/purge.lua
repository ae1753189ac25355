-- ARGV: prefix, room, node, sessions to keep... Removes members of `node` in `room` whose session
-- it no longer hosts (their leave was lost while Redis was unreachable).
local r, node = ARGV[2], ARGV[3]
local keep = {}
for i = 4, #ARGV do keep[ARGV[i]] = true end
local n = 0
for _, x in ipairs(list(r)) do
  if x.m.n == node and not keep[x.m.s] then
    remove(r, x.peer, x.m, 'timeout')
    n = n + 1
  end
end
return n
