"""The hazard registry: durable hazard records in SQL (SQLite by default, PostgreSQL in production), their
lifecycle, append-only history, exports, and a write-behind buffer for when the database is down.

Redis stays the hot path (the map, merge lookups); this package mirrors each map entry into a row, idempotently.
"""
