-- history: read the stream, creating its metadata when there is none so the reader learns
-- the epoch later publishes carry.
-- ARGV[1]: epoch for a new life; ARGV[2]: ttl in ms; ARGV[3]: limit (COUNT, a decimal string
-- so no Lua number rounding touches it); ARGV[4]: the first stream ID to return for a `since`
-- read ("<since+1>-0"), or "" for the last `limit` entries.
-- Returns {epoch, top, id1, payload1, id2, payload2, ...}, oldest first.
if fresh then
  -- Only a new life gets a TTL here: a read must not extend the life of a stream, which ends
  -- `ttl` after its last publish.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local reply = {epoch, top}
if ARGV[3] ~= '0' then
  if ARGV[4] == '' then
    local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[3])
    for i = #entries, 1, -1 do
      reply[#reply + 1] = entries[i][1]
      reply[#reply + 1] = entries[i][2][2]
    end
  else
    local entries = redis.call('XRANGE', KEYS[2], ARGV[4], '+', 'COUNT', ARGV[3])
    for i = 1, #entries do
      reply[#reply + 1] = entries[i][1]
      reply[#reply + 1] = entries[i][2][2]
    end
  end
end
return reply
