-- Shared by every floe room-directory script (prepended to each; see redis_bus.rs).
-- ARGV[1] is always the key prefix. Keys:
--   <P>nodes                   set of live node ids
--   <P>node:<id>:alive         heartbeat string, expires after the node TTL
--   <P>node:<id>:rooms         set of rooms where node <id> has members
--   <P>room:<room>:members     hash peer id -> {"s":session,"n":node,"i":join index,"b":subscribe 0/1}
--   <P>room:<room>:seq         join-index counter
-- Events are published to <P>node:<id>:events; all of one node's events go through that one
-- channel, so it receives them in the order these scripts ran.
local P = ARGV[1]
local function chan(n) return P .. 'node:' .. n .. ':events' end
local function members_key(r) return P .. 'room:' .. r .. ':members' end
local function seq_key(r) return P .. 'room:' .. r .. ':seq' end
local function rooms_key(n) return P .. 'node:' .. n .. ':rooms' end
-- A member record, or nil when the stored value is malformed (skipped, never fatal).
local function dec(v)
  if not v then return nil end
  local ok, m = pcall(cjson.decode, v)
  if ok and type(m) == 'table' and type(m.s) == 'string' and type(m.n) == 'string'
      and type(m.i) == 'number' then
    return m
  end
  return nil
end
-- The room's members, oldest first: {peer = id, m = record}.
local function list(r)
  local all = redis.call('HGETALL', members_key(r))
  local out = {}
  for i = 1, #all, 2 do
    local m = dec(all[i + 1])
    if m then out[#out + 1] = {peer = all[i], m = m} end
  end
  table.sort(out, function(a, b) return a.m.i < b.m.i end)
  return out
end
-- Removes a member and tells every node with members in the room (and the member's node).
local function remove(r, peer, m, reason)
  redis.call('HDEL', members_key(r), peer)
  local nodes, still = {[m.n] = true}, false
  for _, x in ipairs(list(r)) do
    nodes[x.m.n] = true
    if x.m.n == m.n then still = true end
  end
  if not still then redis.call('SREM', rooms_key(m.n), r) end
  if redis.call('HLEN', members_key(r)) == 0 then
    redis.call('DEL', members_key(r), seq_key(r))
  end
  local ev = cjson.encode({t = 'left', room = r, peer = peer, session = m.s, reason = reason})
  for n in pairs(nodes) do redis.call('PUBLISH', chan(n), ev) end
end
-- Removes every member of node n (crashed or shutting down) and forgets the node.
local function reap_node(n, reason)
  for _, r in ipairs(redis.call('SMEMBERS', rooms_key(n))) do
    for _, x in ipairs(list(r)) do
      if x.m.n == n then remove(r, x.peer, x.m, reason) end
    end
  end
  redis.call('DEL', rooms_key(n))
  redis.call('SREM', P .. 'nodes', n)
end
