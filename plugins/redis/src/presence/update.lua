-- presence_update: removes, then adds or renews, as one step.
-- ARGV[1]: the lease in ms; ARGV[2]: n, how many members to add; then n pairs conn, user
-- ('' for none); then the conns to remove.
-- Returns {joined, left, expired}, each a flat list of conn, user.
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local left = {}
for i = 3 + 2 * n, #ARGV do
  local user = drop(ARGV[i])
  if user then
    left[#left + 1] = ARGV[i]
    left[#left + 1] = user
  end
end
local joined = {}
local ends = now + ttl
for i = 0, n - 1 do
  local conn, user = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if redis.call('ZADD', KEYS[1], 0, conn) == 1 then
    if user ~= '' then
      redis.call('HSET', KEYS[3], conn, user)
      redis.call('HINCRBY', KEYS[4], user, 1)
    end
    joined[#joined + 1] = conn
    joined[#joined + 1] = user
  end
  redis.call('ZADD', KEYS[2], ends, conn)
end
-- Every call of a script costs Redis a few microseconds beyond its command, so calls that
-- change nothing are left out: a channel members were just added to is not empty, and leaves
-- need not extend the keys (each lease came with its PEXPIRE below, which outlasts it).
if n > 0 then
  -- No lease outlives `ttl` from now, so neither need the keys: a channel whose every node
  -- died leaves nothing behind once the last lease has ended.
  for i = 1, 4 do
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
else
  tidy()
end
return {joined, left, expired}
