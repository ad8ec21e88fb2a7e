-- presence_read: the counts, and with a limit a page of members after a conn.
-- ARGV[1]: the conn to start after ('' for the first page); ARGV[2]: limit (0: counts only).
-- Returns {connections, users, members (conn, user, ...), next ('' on the last page), expired}.
local limit = tonumber(ARGV[2])
local members = {}
local after = ''
if limit > 0 then
  local from = '-'
  if ARGV[1] ~= '' then
    from = '(' .. ARGV[1]
  end
  local conns = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, limit + 1)
  local shown = math.min(#conns, limit)
  if #conns > limit then
    after = conns[limit]
  end
  if shown > 0 then
    local users = redis.call('HMGET', KEYS[3], unpack(conns, 1, shown))
    for i = 1, shown do
      members[#members + 1] = conns[i]
      members[#members + 1] = users[i] or ''
    end
  end
end
tidy()
return {redis.call('ZCARD', KEYS[1]), redis.call('HLEN', KEYS[4]), members, after, expired}
