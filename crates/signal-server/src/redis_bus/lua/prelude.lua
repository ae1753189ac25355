-- Shared by every floe room-directory script (prepended to each; see redis_bus.rs).
-- ARGV[1] is always the key prefix. Keys:
--   <P>nodes                   set of live node ids
--   <P>node:<id>:alive         heartbeat string, expires after the node TTL
--   <P>node:<id>:rooms         set of rooms where node <id> has members
--   <P>room:<room>:members     hash peer id -> {"s":session,"n":node,"i":join index,"b":subscribe 0/1}
--   <P>room:<room>:seq         join-index counter
--   <P>sess:<s>                hash: the session's shared record (room, peer, i: join index,
--                              seq: last mailbox seq, b: mailbox bytes; after `register`: tok:
--                              sha1 of the resume token, perms, exp, ttl: resume TTL ms, mm/mx:
--                              mailbox bounds; rcv: highest client seq routed; while orphaned:
--                              o: deadline ms, ow: reason it leaves with when not resumed)
--   <P>sess:<s>:mb             stream: the session's unacknowledged numbered messages, id <seq>-0
--   <P>orphans                 zset: sessions whose node died or drained, by deadline ms
-- Events are published to <P>node:<id>:events; all of one node's events go through that one
-- channel, so it receives them in the order these scripts ran.
local P = ARGV[1]
local function chan(n) return P .. 'node:' .. n .. ':events' end
local function members_key(r) return P .. 'room:' .. r .. ':members' end
local function seq_key(r) return P .. 'room:' .. r .. ':seq' end
local function rooms_key(n) return P .. 'node:' .. n .. ':rooms' end
local function sess_key(s) return P .. 'sess:' .. s end
local function mbox_key(s) return P .. 'sess:' .. s .. ':mb' end
local ORPHANS = P .. 'orphans'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Appends `entry` (an event's JSON) to session s's shared mailbox; returns its seq, or nil when
-- the session has no shared record (its node numbers it) or its orphaned mailbox is full (the
-- session then leaves with `overflow` at the next sweep). While a node holds the session it
-- enforces the bounds itself; Redis enforces them once the session is orphaned.
local function number(s, entry)
  local k = sess_key(s)
  local f = redis.call('HMGET', k, 'seq', 'o', 'mm', 'mx', 'b')
  if not f[1] then return nil end
  if f[2] and f[3] then
    if redis.call('XLEN', mbox_key(s)) >= tonumber(f[3])
        or tonumber(f[5] or '0') + #entry > tonumber(f[4]) then
      redis.call('HSET', k, 'o', '0', 'ow', 'overflow')
      redis.call('ZADD', ORPHANS, 0, s)
      return nil
    end
  end
  local seq = redis.call('HINCRBY', k, 'seq', 1)
  redis.call('XADD', mbox_key(s), seq .. '-0', 'e', entry)
  redis.call('HINCRBY', k, 'b', #entry)
  return seq
end
-- Drops session s's shared messages with seq <= upto (clamped to the last seq).
local function trim(s, upto)
  local k = sess_key(s)
  local last = tonumber(redis.call('HGET', k, 'seq') or '0')
  upto = math.min(tonumber(upto) or 0, last)
  if upto < 1 then return 0 end
  local gone = 0
  for _, e in ipairs(redis.call('XRANGE', mbox_key(s), '-', string.format('%d-0', upto))) do
    gone = gone + #e[2][2]
  end
  if gone > 0 then
    redis.call('HINCRBY', k, 'b', -gone)
    redis.call('XTRIM', mbox_key(s), 'MINID', string.format('%d-0', upto + 1))
  end
  return gone
end
-- `ev` (a JSON object) with the per-session seqs of its mailbox entries added.
local function with_seqs(ev, seqs)
  if next(seqs) == nil then return ev end
  return ev:sub(1, -2) .. ',"seqs":' .. cjson.encode(seqs) .. '}'
end
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
-- Removes a member (and its shared session) and tells every node with members in the room (and
-- the member's node); the `peer_left` enters the other members' shared mailboxes.
local function remove(r, peer, m, reason)
  redis.call('HDEL', members_key(r), peer)
  redis.call('DEL', sess_key(m.s), mbox_key(m.s))
  redis.call('ZREM', ORPHANS, m.s)
  local ev = cjson.encode({t = 'left', room = r, peer = peer, session = m.s, reason = reason})
  local nodes, still, seqs = {[m.n] = true}, false, {}
  for _, x in ipairs(list(r)) do
    nodes[x.m.n] = true
    if x.m.n == m.n then still = true end
    seqs[x.m.s] = number(x.m.s, ev)
  end
  if not still then redis.call('SREM', rooms_key(m.n), r) end
  if redis.call('HLEN', members_key(r)) == 0 then
    redis.call('DEL', members_key(r), seq_key(r))
  end
  local out = with_seqs(ev, seqs)
  for n in pairs(nodes) do redis.call('PUBLISH', chan(n), out) end
end
-- Node n crashed (reason timeout) or drains (shutdown): its members with a shared session stay
-- in their rooms for their resume TTL, resumable on any node (the sweep in reap.lua removes
-- them afterwards with `reason`); the others leave now. Then the node is forgotten.
local function orphan_node(n, reason)
  local base = now_ms()
  for _, r in ipairs(redis.call('SMEMBERS', rooms_key(n))) do
    for _, x in ipairs(list(r)) do
      if x.m.n == n then
        local ttl = redis.call('HGET', sess_key(x.m.s), 'ttl')
        if ttl then
          local deadline = base + tonumber(ttl)
          redis.call('HSET', sess_key(x.m.s), 'o', deadline, 'ow', reason)
          redis.call('ZADD', ORPHANS, deadline, x.m.s)
        else
          remove(r, x.peer, x.m, reason)
        end
      end
    end
  end
  redis.call('DEL', rooms_key(n))
  redis.call('SREM', P .. 'nodes', n)
end
