"""Lua scripts of the session store: every multi-step change of a session is one atomic round trip.

KEYS are always keys of one session (KEYS[1] its hash, then its history list and uploads hash): they share the
session's hash tag, hence one cluster slot, so every script runs on Redis Cluster as on one Redis.
"""

# ARGV[1] = TTL in seconds, then the hash's field/value pairs.
CREATE_SESSION = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

ADMIT_FRAME = """
local f = redis.call('HMGET', KEYS[1], 'status', 'ttl_seconds', 'tokens', 'refilled_at')
if not f[1] then return {'missing'} end
if f[1] == 'ended' then return {'ended'} end
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = tonumber(f[3]) or burst
local refilled = tonumber(f[4]) or now
tokens = math.min(burst, tokens + math.max(0, now - refilled) * rate)
if tokens < 1 then return {'limited', tostring((1 - tokens) / rate)} end
local ttl = tonumber(f[2])
local expires = now + ttl
redis.call('HSET', KEYS[1], 'status', 'active', 'last_activity', ARGV[1], 'expires_at', tostring(expires),
  'tokens', tostring(tokens - 1), 'refilled_at', ARGV[1])
local frames = redis.call('HINCRBY', KEYS[1], 'frame_count', 1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return {'ok', tostring(frames)}
"""

# Appends one history entry with the session's remaining TTL; ARGV[4] = '1' also counts a frame that was
# served while Redis was down (replay of degraded mode). A write whose reply was lost (a timeout after Redis
# applied it) is kept and replayed: finding the identical entry already there makes the replay a no-op.
RECORD_DETECTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return 1 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
if ARGV[4] == '1' then
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_seconds'))
  redis.call('HINCRBY', KEYS[1], 'frame_count', 1)
  if redis.call('HGET', KEYS[1], 'status') ~= 'ended' then
    local now = tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], 'status', 'active', 'last_activity', ARGV[3], 'expires_at', tostring(now + ttl))
    for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
    return 1
  end
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then redis.call('PEXPIRE', KEYS[2], pttl) end
return 1
"""

END_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'ended' then
  local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'status', 'ended', 'ended_at', ARGV[1], 'expires_at', tostring(now + grace))
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], grace) end
end
return 1
"""

# KEYS: the session hash, its uploads hash. The URL lives exactly as long as the session: no key outlives it.
SET_UPLOAD_URL = """
local pttl = redis.call('PTTL', KEYS[1])
if pttl <= 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], pttl)
return 1
"""
