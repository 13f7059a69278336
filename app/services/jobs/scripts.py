"""Lua scripts of the job store. Each touches one job's keys only (one hash tag), so it is atomic on its own.

KEYS of every job script: [1] job hash, [2] frames (index -> bytes), [3] meta (index -> JSON), [4] results,
[5] tracks and [6] hazards (the tracker's state over the job's frames: `tracking.scripts.ASSOCIATE` runs on
[1], [5], [6] as it does on a session's keys). Every key but the frames lives as long as the job.
"""

# ARGV: ttl, frame_ttl, now, n, then n pairs (bytes, meta JSON). -> first index, or an error status string.
ADD_FRAMES = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {err = 'missing'} end
if redis.call('HGET', KEYS[1], 'closed') == '1' or status == 'cancelled' then return {err = 'closed'} end
local n = tonumber(ARGV[4])
local first = redis.call('HINCRBY', KEYS[1], 'total', n) - n
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], first + i, ARGV[5 + 2 * i])
  redis.call('HSET', KEYS[3], first + i, ARGV[6 + 2 * i])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 1, #KEYS do if i ~= 2 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end end
return first
"""

# ARGV: index, now. -> {state, bytes, meta, job created_at, the frame before's meta ('' for none)}; state: 'run',
# 'done' (a result exists: a retry after it was written), 'cancelled' (bytes dropped; their size is returned so the
# caller can release it), 'expired' (the frame waited past JOB_FRAME_TTL_SECONDS), 'gone' (the job itself expired).
CLAIM_FRAME = """
local index = ARGV[1]
if redis.call('HEXISTS', KEYS[4], index) == 1 then return {'done', '', ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone', '', ''} end
if status == 'cancelled' then
  local size = redis.call('HSTRLEN', KEYS[2], index)
  redis.call('HDEL', KEYS[2], index)
  return {'cancelled', tostring(size), ''}
end
local frame = redis.call('HGET', KEYS[2], index)
if not frame then return {'expired', '', redis.call('HGET', KEYS[3], index) or '{}'} end
if status == 'open' then redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[2]) end
local before = redis.call('HGET', KEYS[3], tostring(tonumber(index) - 1)) or ''
return {'run', frame, redis.call('HGET', KEYS[3], index) or '{}', redis.call('HGET', KEYS[1], 'created_at'), before}
"""

# A closed job whose every frame has a result is finished: failed when no frame succeeded, else completed.
SETTLE = """
local function settle(job, status)
  if status ~= 'open' and status ~= 'running' then return status end
  local done = tonumber(redis.call('HGET', job, 'done'))
  local finished = done + tonumber(redis.call('HGET', job, 'failed'))
  if redis.call('HGET', job, 'closed') == '1' and finished == tonumber(redis.call('HGET', job, 'total')) then
    if done == 0 and finished > 0 then status = 'failed' else status = 'completed' end
  end
  redis.call('HSET', job, 'status', status)
  return status
end
"""

# Written once per frame (HSETNX): a retried frame never counts twice. ARGV: index, result JSON, outcome
# (done|failed), cached (0|1), detections (boxes), now, ttl. -> {written (0|1), status, bytes released}
RECORD_RESULT = (
    SETTLE
    + """
local index = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'gone', 0} end
if redis.call('HSETNX', KEYS[4], index, ARGV[2]) == 0 then
  return {0, redis.call('HGET', KEYS[1], 'status'), 0}
end
local size = redis.call('HSTRLEN', KEYS[2], index)
redis.call('HDEL', KEYS[2], index)
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
redis.call('HINCRBY', KEYS[1], 'cached', tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[1], 'detections', tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], 'updated_at', ARGV[6])
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'open' then status = 'running' end
status = settle(KEYS[1], status)
for i = 1, #KEYS do if i ~= 2 then redis.call('EXPIRE', KEYS[i], ARGV[7]) end end
return {1, status, size}
"""
)

# Another tenant's job is 'missing', as an unknown one is (ARGV[2]: the tenant that must own it, '' for any).
FOREIGN = """
local function foreign(job, owner)
  return owner ~= '' and (redis.call('HGET', job, 'tenant') or 'local') ~= owner
end
"""

# ARGV: now, owner. -> the status after closing, or an error status string.
CLOSE_JOB = (
    SETTLE
    + FOREIGN
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or foreign(KEYS[1], ARGV[2]) then return {err = 'missing'} end
if status == 'cancelled' then return {err = 'closed'} end
redis.call('HSET', KEYS[1], 'closed', '1', 'updated_at', ARGV[1])
return settle(KEYS[1], status)
"""
)

# Frames not yet taken are dropped here; a worker that claims one later finds the job cancelled.
# ARGV: now, owner. -> bytes released, or an error status string.
CANCEL_JOB = (
    FOREIGN
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or foreign(KEYS[1], ARGV[2]) then return {err = 'missing'} end
if status == 'completed' or status == 'failed' then return {err = 'finished'} end
local released = 0
for _, frame in ipairs(redis.call('HVALS', KEYS[2])) do released = released + string.len(frame) end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'closed', '1', 'updated_at', ARGV[1])
return released
"""
)

# The fleet-wide bound on frame bytes waiting for a worker (its own key: a separate step from the job's).
# The key expires with the frames it counts, so bytes of frames that expired unclaimed cannot leak.
# ARGV: bytes, limit, frame_ttl. -> 1 reserved, 0 refused.
RESERVE_BYTES = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > 0 and current + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# ARGV: bytes. Never below zero (the key may have expired and restarted meanwhile).
RELEASE_BYTES = """
local left = redis.call('DECRBY', KEYS[1], ARGV[1])
if left < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return math.max(left, 0)
"""
