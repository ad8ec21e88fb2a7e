#!lua
-- Shared opening of both history scripts (the shebang makes Redis 7 check, in a cluster, that
-- everything the script touches is in the slot of its declared keys).
-- KEYS[1]: the stream's metadata hash {epoch, top}; KEYS[2]: the stream.
-- Afterwards `epoch` and `top` (a string) are the stream's, a new life having been started
-- with the epoch in ARGV[1] when the metadata is gone, or when the stream itself is gone while
-- the metadata says something was published (evicted apart from it): the history of that
-- life is lost, so a new epoch must say so. `fresh` tells whether that happened.
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'top')
local epoch, top = meta[1], meta[2] or '0'
local fresh = false
if not epoch or (top ~= '0' and redis.call('EXISTS', KEYS[2]) == 0) then
  -- Entries of an earlier life must not be read as this one's.
  redis.call('DEL', KEYS[2])
  epoch, top, fresh = ARGV[1], '0', true
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', '0')
end
