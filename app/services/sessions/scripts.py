"""Lua scripts of the session store: every multi-step change of a session is one atomic round trip.

KEYS are always keys of one session (KEYS[1] its hash, then its history list, uploads hash and tracking keys):
they share the session's hash tag, hence one cluster slot, so every script runs on Redis Cluster as on one Redis.
"""

# ARGV[1] = TTL in seconds, then the hash's field/value pairs.
CREATE_SESSION = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

# ARGV: now, rate, burst, the tenant that must own the session ('' for any: an admin). -> {'ok', its tenant} (whose
# map its hazards go on). Another tenant's session answers 'foreign', which the store turns into the unknown
# session's 404: the owner check costs no round trip.
# Sessions stored before tenants were recorded belong to 'local' (principal.LOCAL_TENANT).
ADMIT_FRAME = """
local f = redis.call('HMGET', KEYS[1], 'status', 'ttl_seconds', 'tokens', 'refilled_at', 'tenant')
if not f[1] then return {'missing'} end
if ARGV[4] ~= '' and (f[5] or 'local') ~= ARGV[4] then return {'foreign'} end
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
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
return {'ok', f[5] or 'local'}
"""

# Appends one history entry with the session's remaining TTL and counts the frame: frame_count counts frames
# served (recorded), not frames admitted. ARGV[4] = '1' marks a frame served while Redis was down (replay of
# degraded mode): it was never admitted, so its replay also slides the TTL. A write whose reply was lost (a
# timeout after Redis applied it) is kept and replayed: finding the identical entry already there makes the replay
# a no-op, so no frame is counted twice. ARGV[5]: the tenant that must own the session ('' for any): a frame served
# unverified (degraded) was never checked against its owner. Returns the session's frame_count, 0 if the session is
# gone (or another tenant's).
RECORD_DETECTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[5] and ARGV[5] ~= '' and (redis.call('HGET', KEYS[1], 'tenant') or 'local') ~= ARGV[5] then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return tonumber(redis.call('HGET', KEYS[1], 'frame_count')) or 1 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local frames = redis.call('HINCRBY', KEYS[1], 'frame_count', 1)
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], 'status') ~= 'ended' then
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_seconds'))
  local now = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'status', 'active', 'last_activity', ARGV[3], 'expires_at', tostring(now + ttl))
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
  return frames
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then redis.call('PEXPIRE', KEYS[2], pttl) end
return frames
"""

# ARGV: now, grace, the tenant that must own the session ('' for any). -> 1 ended (or already), 0 unknown or foreign.
END_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] ~= '' and (redis.call('HGET', KEYS[1], 'tenant') or 'local') ~= ARGV[3] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'ended' then
  local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'status', 'ended', 'ended_at', ARGV[1], 'expires_at', tostring(now + grace))
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], grace) end
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

# Session creation per client: KEYS[1] = the client's hash (its own hash tag: one key, one slot). Two token buckets
# in it: sessions (ARGV[2] per second, burst ARGV[3]) and TTL-seconds (ARGV[5] per second, capacity ARGV[6]); this
# session costs 1 and ARGV[4]. Both are taken or neither; the key lives until both would be full again.
# Returns {'ok'} or {'limited', seconds until both buckets can pay}.
TAKE_CREATION = """
local now = tonumber(ARGV[1])
local rate, burst, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl_rate, ttl_cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local f = redis.call('HMGET', KEYS[1], 'sessions', 'ttl', 'at')
local at = tonumber(f[3]) or now
local elapsed = math.max(0, now - at)
local sessions = math.min(burst, (tonumber(f[1]) or burst) + elapsed * rate)
local ttl = math.min(ttl_cap, (tonumber(f[2]) or ttl_cap) + elapsed * ttl_rate)
if sessions < 1 or ttl < cost then
  local wait = math.max((1 - sessions) / rate, (cost - ttl) / ttl_rate)
  return {'limited', tostring(wait)}
end
sessions, ttl = sessions - 1, ttl - cost
redis.call('HSET', KEYS[1], 'sessions', tostring(sessions), 'ttl', tostring(ttl), 'at', ARGV[1])
local full = math.max((burst - sessions) / rate, (ttl_cap - ttl) / ttl_rate)
redis.call('EXPIRE', KEYS[1], math.ceil(full) + 1)
return {'ok'}
"""
