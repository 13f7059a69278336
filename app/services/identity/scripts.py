"""Lua scripts of the API key store: each change of a key is one atomic round trip.

KEYS are always keys of one deployment's key store (`{<namespace>:api-keys}:...`): one hash tag, one cluster
slot, so every script runs on Redis Cluster as on one Redis. Every change a verifier must see (revoke, new
limits or profile) increments the store's version in the same script, which is what replicas watch.
"""

# KEYS: record, all-ids index, tenant index. ARGV[1] = key id, ARGV[2] = created_at, then field/value pairs.
# Returns 0 when the id is taken (the caller draws another).
CREATE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

# KEYS: record, version. ARGV[1] = now. A second revoke keeps the first time.
REVOKE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local revoked = redis.call('HGET', KEYS[1], 'revoked_at')
if not revoked or revoked == '' then redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1]) end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: record, version. ARGV: field/value pairs.
UPDATE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: record, version. The record's fields with the version they were read at (one atomic read, so a cached
# record is never newer or older than the version it is filed under).
READ_KEY = """
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2]) or '0'}
"""

# KEYS: record. ARGV[1] = now. Not a change verifiers must see: no version increment (that would empty every
# replica's cache on every use).
TOUCH_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
return 1
"""
