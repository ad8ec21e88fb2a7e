-- publish_kept: append ARGV[4] to the stream and publish it with its position, in one step.
-- KEYS[3]: the backend channel, declared so that a cluster node checks its slot (the keys'
-- slot, by their hash tag) before anything is written.
-- ARGV[1]: epoch for a new life; ARGV[2]: ttl in ms; ARGV[3]: size (kept entries);
-- ARGV[4]: payload; ARGV[5]: PUBLISH (standalone) or SPUBLISH (cluster).
-- Returns {offset, epoch}.
local publish = ARGV[5]
if publish ~= 'PUBLISH' and publish ~= 'SPUBLISH' then
  return redis.error_reply('ERR unknown publish command ' .. publish)
end
-- Offsets are kept as integers in strings: Lua numbers are doubles, and tostring() of a large
-- one would give an exponent. %d is exact up to 2^53.
local offset = string.format('%d', tonumber(top) + 1)
-- Exact MAXLEN (no `~`): at most `size` entries are kept, never a few more.
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-1', 'p', ARGV[4])
redis.call('HSET', KEYS[1], 'top', offset)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call(publish, KEYS[3], '\0' .. offset .. ':' .. epoch .. '\n' .. ARGV[4])
return {offset, epoch}
