"""Sessions in Redis: the store, its Lua scripts, and the write-behind buffer of degraded mode."""
