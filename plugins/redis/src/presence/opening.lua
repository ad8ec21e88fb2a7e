-- presence: the opening shared by every presence script.
-- KEYS[1]: members, a sorted set of conns, all with score 0, so it is ordered by conn (pages);
-- KEYS[2]: leases, a sorted set of conn -> the lease's end (ms, Redis's clock);
-- KEYS[3]: hash conn -> user, for members with one;
-- KEYS[4]: hash user -> how many members have that user (its HLEN is the users count).
-- Purges every member whose lease has ended; `expired` lists them as conn, user ('' for none).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Removes `conn`; its user ('' for none), or nil when it was not a member.
local function drop(conn)
  if redis.call('ZREM', KEYS[1], conn) == 0 then
    return nil
  end
  redis.call('ZREM', KEYS[2], conn)
  local user = redis.call('HGET', KEYS[3], conn)
  if not user then
    return ''
  end
  redis.call('HDEL', KEYS[3], conn)
  if redis.call('HINCRBY', KEYS[4], user, -1) <= 0 then
    redis.call('HDEL', KEYS[4], user)
  end
  return user
end

local expired = {}
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local user = drop(conn)
  if user then
    expired[#expired + 1] = conn
    expired[#expired + 1] = user
  end
end

-- An empty channel leaves no keys behind.
local function tidy()
  if redis.call('ZCARD', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
    return true
  end
  return false
end
