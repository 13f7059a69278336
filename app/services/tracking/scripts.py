"""Lua scripts of tracking. ASSOCIATE runs on one session's keys (one slot); MERGE_INTO_MAP on the hazard map's
keys (another slot, the fleet's hash tag). No script touches both: merging into the map is its own round trip.
"""

# The matcher of `matcher.py`, line for line (a test holds the two equal), atomic per session: concurrent frames
# of one session, from any replica, are associated one after the other and never start two tracks for one hazard.
# KEYS: the session hash, its tracks hash (`open`: open tracks, `applied`: recent update ids), its hazards hash
# (hazard id -> confirmed record). ARGV: the frame (JSON), the parameters (JSON), the update's id: an update whose
# reply was lost and that is replayed finds its id in `applied` and changes nothing. Each track keeps its latest
# views (`sightings`, time order, at most `sightings_kept`) for its position. The reply carries what positions need
# besides: the session's `camera` (its metadata's, checked at creation) and the `calibration` estimated from its
# tracks (tracks hash, `calibration`), when there are.
ASSOCIATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return cjson.encode({status = 'missing'}) end
local frame = cjson.decode(ARGV[1])
local p = cjson.decode(ARGV[2])
local applied_raw = redis.call('HGET', KEYS[2], 'applied')
local applied = {}
if applied_raw then applied = cjson.decode(applied_raw) end
for _, id in ipairs(applied) do
  if id == ARGV[3] then return cjson.encode({status = 'duplicate'}) end
end

local function grow(b, r)
  local dx, dy = (b[3] - b[1]) * r, (b[4] - b[2]) * r
  return {b[1] - dx, b[2] - dy, b[3] + dx, b[4] + dy}
end
local function iou(a, b)
  local ix = math.min(a[3], b[3]) - math.max(a[1], b[1])
  local iy = math.min(a[4], b[4]) - math.max(a[2], b[2])
  if ix <= 0 or iy <= 0 then return 0 end
  local inter = ix * iy
  local union = (a[3] - a[1]) * (a[4] - a[2]) + (b[3] - b[1]) * (b[4] - b[2]) - inter
  if union > 0 then return inter / union end
  return 0
end

-- A view as `Sighting.of` makes it, and `_add_sighting`: in (at, v, u) order, the oldest dropped past the limit.
local function sighting(d)
  return {at = frame.at, u = tonumber(string.format('%.3f', (d.box[1] + d.box[3]) / 2)), v = d.box[4],
    w = frame.width, h = frame.height, lat = frame.lat, lon = frame.lon, hd = frame.heading, sp = frame.speed_mps,
    bw = tonumber(string.format('%.3f', d.box[3] - d.box[1])),
    bh = tonumber(string.format('%.3f', d.box[4] - d.box[2]))}
end
local function later(a, b)
  if a.at ~= b.at then return a.at > b.at end
  if a.v ~= b.v then return a.v > b.v end
  return a.u > b.u
end
local function add_sighting(t, s)
  if type(t.sightings) ~= 'table' then t.sightings = {} end
  local at = #t.sightings + 1
  while at > 1 and later(t.sightings[at - 1], s) do at = at - 1 end
  table.insert(t.sightings, at, s)
  while #t.sightings > p.sightings_kept do table.remove(t.sightings, 1) end
end

-- `reference_view` of matcher.py: the box a frame meets and how far apart in time; a frame older than the track's
-- newest view meets the view nearest it in time (the first of equals).
local function reference_view(t)
  local newest_box, newest_apart = t.box, math.abs(frame.at - t.last_seen)
  if frame.at >= t.last_seen or type(t.sightings) ~= 'table' or #t.sightings == 0 then
    return newest_box, newest_apart
  end
  local nearest = t.sightings[1]
  for _, s in ipairs(t.sightings) do
    if math.abs(s.at - frame.at) < math.abs(nearest.at - frame.at) then nearest = s end
  end
  if nearest.bw == nil or nearest.bh == nil then return newest_box, newest_apart end
  local half = nearest.bw / 2
  return {nearest.u - half, nearest.v - nearest.bh, nearest.u + half, nearest.v}, math.abs(nearest.at - frame.at)
end

local tracks = {}
local open_raw = redis.call('HGET', KEYS[2], 'open')
if open_raw then
  for _, t in ipairs(cjson.decode(open_raw)) do
    if frame.at - t.last_seen <= p.max_gap_seconds then table.insert(tracks, t) end
  end
end
local detections = frame.detections
local candidates = {}
for ti, t in ipairs(tracks) do
  if math.max(t.first_seen - frame.at, frame.at - t.last_seen, 0) <= p.max_gap_seconds then
    local reference, apart = reference_view(t)
    local ratio = p.box_expand * math.max(1, apart / p.expand_interval_seconds)
    local grown = grow(reference, ratio)
    for di, d in ipairs(detections) do
      if d.class_id == t.class_id then
        local overlap = iou(grown, grow(d.box, ratio))
        if overlap >= p.iou_threshold then table.insert(candidates, {overlap, ti, di}) end
      end
    end
  end
end
table.sort(candidates, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
local track_of, taken = {}, {}
for _, c in ipairs(candidates) do
  if not track_of[c[3]] and not taken[c[2]] then
    track_of[c[3]] = c[2]
    taken[c[2]] = true
  end
end

local assignments, changed = {}, {}
for di, d in ipairs(detections) do
  local ti = track_of[di]
  local t
  local new = false
  if not ti then
    t = {hazard_id = d.candidate_id, label = d.label, class_id = d.class_id, box = d.box,
      first_seen = frame.at, last_seen = frame.at, frames = 1, max_confidence = d.confidence,
      best_request_id = frame.request_id, best_at = frame.at, lat = frame.lat, lon = frame.lon,
      model = frame.model, confirmed = (p.min_hits <= 1), sightings = {sighting(d)}}
    table.insert(tracks, t)
    new = t.confirmed
  else
    t = tracks[ti]
    if frame.at >= t.last_seen then
      t.box = d.box
      if frame.lat ~= nil then t.lat, t.lon = frame.lat, frame.lon end
    end
    t.first_seen = math.min(t.first_seen, frame.at)
    t.last_seen = math.max(t.last_seen, frame.at)
    t.frames = t.frames + 1
    add_sighting(t, sighting(d))
    if d.confidence > t.max_confidence then
      t.max_confidence = d.confidence
      t.best_request_id, t.best_at = frame.request_id, frame.at
      t.model = frame.model
    end
    if not t.confirmed and t.frames >= p.min_hits then
      t.confirmed = true
      new = true
    end
  end
  local upload = false
  if t.confirmed and d.confidence >= p.upload_min_confidence and
      (t.uploaded_confidence == nil or d.confidence >= t.uploaded_confidence + p.upload_margin) then
    upload = true
    t.uploaded_confidence, t.upload_media_id = d.confidence, frame.media_id
  end
  if t.confirmed then table.insert(changed, t) end
  table.insert(assignments, {t.hazard_id, new and 1 or 0, upload and 1 or 0})
end

table.insert(applied, ARGV[3])
while #applied > 64 do table.remove(applied, 1) end
redis.call('HSET', KEYS[2], 'open', cjson.encode(tracks), 'applied', cjson.encode(applied))
for _, t in ipairs(changed) do redis.call('HSET', KEYS[3], t.hazard_id, cjson.encode(t)) end
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('PEXPIRE', KEYS[2], pttl)
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], pttl) end
end
local camera
local metadata = redis.call('HGET', KEYS[1], 'metadata')
if metadata and string.find(metadata, '"camera"', 1, true) then
  local ok, decoded = pcall(cjson.decode, metadata)
  if ok and type(decoded) == 'table' and type(decoded.camera) == 'table' then camera = decoded.camera end
end
local calibration = redis.call('HGET', KEYS[2], 'calibration')
return cjson.encode({status = 'ok', assignments = assignments, changed = changed, camera = camera,
  calibration = calibration or nil})
"""

# One session's confirmed, located hazard into the fleet's map. KEYS: the geo set (member: map id), the expiry
# zset (map id -> when it expires), the sources hash (`<session>/<hazard>` -> map id). ARGV: the entries' key
# prefix, now, TTL seconds, merge radius (m: the most any two reports may be apart), the source, label, lon, lat,
# confidence, first seen, last seen, best frame URL ('' when none yet), a new id for a new entry, the model, the
# position's uncertainty (m, one standard deviation per axis), its method, how many standard deviations of their
# difference two positions may be apart and still be one hazard, and the hazard's frames so far. Each source is one
# report of one entry (a session re-reporting a better position replaces its report, and may move it to another
# entry); the entry's position is the uncertainty-weighted mean of its reports (weights 1 / u^2, its uncertainty
# 1 / sqrt of their sum), `reports` the number of distinct sessions. A session's GPS bias (its `offset`, KEYS[4]:
# session -> its samples) is learned against other sessions' entries and subtracted before the report is matched.
# A report keeps both positions: as measured (`lat`, `lon`: the entry's shown position averages its vehicles' biases)
# and less its session's offset (`flat`, `flon`: the entry's `frame_lat`, `frame_lon` in the map's frame, where
# reports are matched and offsets learned). Two hazards side by side keep their places in the frame whichever
# vehicles reported each since; their shown positions average different vehicles. `map_merge.FleetMap`
# is this rule in Python; a test holds them equal. Expired entries are purged first (bounded). Returns {map id,
# 1 when this report established the session's offset (its earlier reports are to be matched again) else 0, the
# entries it emptied (their last report moved into the map id's)}.
MERGE_INTO_MAP = """
local prefix, now, ttl, radius = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local source, label = ARGV[5], ARGV[6]
local lon, lat, uncertainty, method, sigmas = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[15]), ARGV[16],
  tonumber(ARGV[17])
local keep_for = ttl + 86400  -- keys outlive their expiry a day, so a purge still finds what to clean up
local LEGACY_UNCERTAINTY = 6.2  -- reports stored before positions had one: the camera's GPS, a few metres short
local SAME_OBJECT_M = 0.75

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, old in ipairs(expired) do
  for _, s in ipairs(redis.call('HKEYS', prefix .. old .. ':reports')) do
    if redis.call('HGET', KEYS[3], s) == old then redis.call('HDEL', KEYS[3], s) end
  end
  redis.call('DEL', prefix .. old, prefix .. old .. ':reports')
  redis.call('ZREM', KEYS[1], old)
  redis.call('ZREM', KEYS[2], old)
end

local function session_of(s) return string.match(s, '^(.-)/') end

-- Haversine on Redis' sphere, as `hazard_map.distance_m`.
local function distance(lat1, lon1, lat2, lon2)
  local p1, p2 = math.rad(lat1), math.rad(lat2)
  local dp, dl = p2 - p1, math.rad(lon2 - lon1)
  local a = math.sin(dp / 2) ^ 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ^ 2
  return 2 * 6372797.560856 * math.asin(math.min(1, math.sqrt(a)))
end

-- An entry's position and summary from its reports (deleted when none is left: then true).
local function recompute(id, entry_label)
  local entry, reports_key = prefix .. id, prefix .. id .. ':reports'
  local raw = redis.call('HGETALL', reports_key)
  if #raw == 0 then
    redis.call('DEL', entry, reports_key)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    return true
  end
  local order = {}
  for i = 1, #raw, 2 do table.insert(order, i) end
  table.sort(order, function(a, b) return raw[a] < raw[b] end)  -- sums in source order: the twin adds alike
  local sum_w, sum_lon, sum_lat, sum_flon, sum_flat, first, last = 0, 0, 0, 0, 0, nil, nil
  local sessions, session_count = {}, 0
  local best, max_confidence, sharpest
  for _, i in ipairs(order) do
    local r = cjson.decode(raw[i + 1])
    local u = math.max(r.u or LEGACY_UNCERTAINTY, 0.01)
    local w = 1 / (u * u)
    sum_w, sum_lon, sum_lat = sum_w + w, sum_lon + w * r.lon, sum_lat + w * r.lat
    sum_flon, sum_flat = sum_flon + w * (r.flon or r.lon), sum_flat + w * (r.flat or r.lat)
    if first == nil or r.first_seen < first then first = r.first_seen end
    if last == nil or r.last_seen > last then last = r.last_seen end
    if max_confidence == nil or r.confidence > max_confidence then max_confidence = r.confidence end
    if sharpest == nil or u < sharpest.u then sharpest = {u = u, method = r.method or 'camera_gps'} end
    local session = session_of(raw[i])
    if not sessions[session] then
      sessions[session] = true
      session_count = session_count + 1
    end
    if best == nil or (r.url ~= '' and best.url == '') or
        ((r.url ~= '') == (best.url ~= '') and r.confidence > best.confidence) then
      best = r
    end
  end
  local entry_lon, entry_lat = sum_lon / sum_w, sum_lat / sum_w
  redis.call('GEOADD', KEYS[1], entry_lon, entry_lat, id)
  redis.call('HSET', entry, 'label', entry_label, 'lon', tostring(entry_lon), 'lat', tostring(entry_lat),
    'reports', session_count, 'first_reported', tostring(first), 'last_reported', tostring(last),
    'max_confidence', tostring(max_confidence), 'best_frame_url', best.url, 'model', best.model,
    'position_uncertainty_m', tostring(1 / math.sqrt(sum_w)), 'position_method', sharpest.method,
    'frame_lon', tostring(sum_flon / sum_w), 'frame_lat', tostring(sum_flat / sum_w))
  redis.call('EXPIRE', entry, keep_for)
  redis.call('EXPIRE', reports_key, keep_for)
end

-- Whether the entry holds another hazard of this report's session seen at the same time as this one, and placed
-- apart from it (more than SAME_OBJECT_M): the session's tracker told those two apart in one frame, so they are two
-- hazards (two potholes side by side). Two tracks of a session one after the other (a track that broke) or at one
-- place (two boxes on one object) may merge.
local first_seen, last_seen = tonumber(ARGV[10]), tonumber(ARGV[11])
local function holds_session(id)
  local session = session_of(source)
  local raw = redis.call('HGETALL', prefix .. id .. ':reports')
  for i = 1, #raw, 2 do
    if raw[i] ~= source and session_of(raw[i]) == session then
      local r = cjson.decode(raw[i + 1])
      if r.first_seen <= last_seen and first_seen <= r.last_seen and
          distance(lat, lon, r.lat, r.lon) > SAME_OBJECT_M then return true end
    end
  end
  return false
end

-- The report joins the nearest entry of its class whose position agrees with its own within `sigmas` standard
-- deviations of their difference (and the radius), found again at every report: a session's position improves as
-- the camera comes closer, and a report first placed roughly must be able to join the entry other sessions built.
-- Without one, it stays where it was, or starts a new entry. Distances are computed from the entries' stored
-- positions (GEOSEARCH only finds candidates: its geohash cells are ~0.6 m coarse).
local current = redis.call('HGET', KEYS[3], source)
if current and redis.call('EXISTS', prefix .. current) == 0 then current = nil end
local id, nearest
local near = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[7], ARGV[8], 'BYRADIUS', radius + 1, 'm',
  'ASC', 'COUNT', 32)

-- The session's GPS offset against the map (`map_merge.SessionOffset`): a report with exactly one entry of its class
-- that other sessions placed within OFFSET_CLEAR_M (their reports' weighted mean, the camera's GPS left out) is a
-- sample of how far this vehicle's positions sit from the fleet's; the offset is the median of the session's latest
-- OFFSET_KEPT samples (one per hazard), applied once it rests on OFFSET_MIN_SAMPLES. Two vehicles whose GPS disagree
-- by more than the merge gate then still report one pothole once.
local OFFSET_CLEAR_M, OFFSET_MIN_SAMPLES, OFFSET_KEPT = 8.0, 3, 30
local FRAME_APART_M = OFFSET_CLEAR_M * 1.5  -- an offset is at most OFFSET_CLEAR_M north and east
local RADIANS, EARTH_M = math.pi / 180, 6372797.560856
local session = session_of(source)
local offsets, offsets_changed = {samples = {}, established = false}, false
local offsets_raw = redis.call('HGET', KEYS[4], session)
if offsets_raw then offsets = cjson.decode(offsets_raw) end
local function others_position(id)
  local raw = redis.call('HGETALL', prefix .. id .. ':reports')
  local order = {}
  for i = 1, #raw, 2 do table.insert(order, i) end
  table.sort(order, function(a, b) return raw[a] < raw[b] end)  -- sums in source order, as the twin does
  local sum_w, sum_lat, sum_lon = 0, 0, 0
  for _, i in ipairs(order) do
    local r = cjson.decode(raw[i + 1])
    if session_of(raw[i]) ~= session and r.method ~= 'camera_gps' then
      local u = math.max(r.u or LEGACY_UNCERTAINTY, 0.01)
      local w = 1 / (u * u)
      sum_w, sum_lat, sum_lon = sum_w + w, sum_lat + w * (r.flat or r.lat), sum_lon + w * (r.flon or r.lon)
    end
  end
  if sum_w == 0 then return nil end
  return sum_lat / sum_w, sum_lon / sum_w
end
if method ~= 'camera_gps' then
  local clear, count = nil, 0
  for _, candidate in ipairs(redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[7], ARGV[8], 'BYRADIUS',
      OFFSET_CLEAR_M + radius + 1, 'm', 'ASC')) do
    if redis.call('HGET', prefix .. candidate, 'label') == label then
      local o_lat, o_lon = others_position(candidate)
      if o_lat and distance(lat, lon, o_lat, o_lon) <= OFFSET_CLEAR_M then
        clear, count = {o_lat, o_lon}, count + 1
      end
    end
  end
  for i = #offsets.samples, 1, -1 do
    if offsets.samples[i][1] == source then
      table.remove(offsets.samples, i)
      offsets_changed = true
    end
  end
  if count == 1 then
    local north = tonumber(string.format('%.14g', (clear[1] - lat) * RADIANS * EARTH_M))
    local east = tonumber(string.format('%.14g', (clear[2] - lon) * RADIANS * EARTH_M * math.cos(lat * RADIANS)))
    table.insert(offsets.samples, {source, north, east})
    while #offsets.samples > OFFSET_KEPT do table.remove(offsets.samples, 1) end
    offsets_changed = true
  end
end
local function median(index)
  local values = {}
  for _, sample in ipairs(offsets.samples) do table.insert(values, sample[index]) end
  table.sort(values)
  local middle = math.floor(#values / 2)
  if #values % 2 == 1 then return values[middle + 1] end
  return (values[middle] + values[middle + 1]) / 2
end
local realigned = 0
local alat, alon = lat, lon
if #offsets.samples >= OFFSET_MIN_SAMPLES then
  if not offsets.established then realigned, offsets_changed = 1, true end
  offsets.established = true
  alat = lat + median(2) / EARTH_M / RADIANS
  alon = lon + median(3) / (EARTH_M * math.cos(lat * RADIANS)) / RADIANS
end
-- Entries are matched in the map's frame; the geo set holds where they are shown, at most FRAME_APART_M away.
local matchable = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', alon, alat, 'BYRADIUS', radius + FRAME_APART_M + 1,
  'm', 'ASC', 'COUNT', 64)
if offsets_changed then redis.call('HSET', KEYS[4], session, cjson.encode(offsets)) end  -- most merges: no write

-- One object that one session saw as two classes at once (debris also detected as a crack), projected to the same
-- place: one hazard, shown once. The report of fewer frames (then the greater source) gives way: it leaves the map,
-- and this call answers the entry of the one it gave way to.
local frames = tonumber(ARGV[18])
local yield_to, yield_frames, yield_source
local lesser = {}
if method ~= 'camera_gps' then
  for _, candidate in ipairs(near) do
    local raw = redis.call('HGETALL', prefix .. candidate .. ':reports')
    for i = 1, #raw, 2 do
      if raw[i] ~= source and session_of(raw[i]) == session_of(source) then
        local r = cjson.decode(raw[i + 1])
        if r.label and r.label ~= label and r.method ~= 'camera_gps' and r.first_seen <= last_seen and
            first_seen <= r.last_seen and distance(lat, lon, r.lat, r.lon) <= SAME_OBJECT_M then
          local f = r.frames or 0
          if f > frames or (f == frames and raw[i] < source) then
            if yield_to == nil or f > yield_frames or (f == yield_frames and raw[i] < yield_source) then
              yield_to, yield_frames, yield_source = candidate, f, raw[i]
            end
          else
            table.insert(lesser, {candidate, raw[i], r.label})
          end
        end
      end
    end
  end
end
-- Entries this report emptied (their last report moved to, or gave way to, the entry answered): the registry folds
-- their records into that entry's.
local emptied = {}
if yield_to then
  if current then
    redis.call('HDEL', prefix .. current .. ':reports', source)
    if recompute(current, label) then table.insert(emptied, current) end
  end
  redis.call('HDEL', KEYS[3], source)
  return {yield_to, realigned, emptied}
end
for _, gone in ipairs(lesser) do
  redis.call('HDEL', prefix .. gone[1] .. ':reports', gone[2])
  redis.call('HDEL', KEYS[3], gone[2])
  if recompute(gone[1], gone[3]) then table.insert(emptied, gone[1]) end
end
for _, candidate in ipairs(matchable) do
  local e = redis.call('HMGET', prefix .. candidate, 'label', 'lon', 'lat', 'position_uncertainty_m', 'frame_lon',
    'frame_lat')
  if e[1] == label then
    local d = distance(alat, alon, tonumber(e[6] or e[3]), tonumber(e[5] or e[2]))
    local u = tonumber(e[4]) or LEGACY_UNCERTAINTY
    if d <= radius and d <= sigmas * math.sqrt(uncertainty * uncertainty + u * u) and
        (nearest == nil or d < nearest or (d == nearest and candidate < id)) and not holds_session(candidate) then
      id, nearest = candidate, d
    end
  end
end
id = id or current or ARGV[13]
local url = ARGV[12]
if url == '' and current then  -- a newer best frame still uploading: the report keeps the picture that landed
  local old = redis.call('HGET', prefix .. current .. ':reports', source)
  if old then url = cjson.decode(old).url or '' end
end
if current and current ~= id then
  redis.call('HDEL', prefix .. current .. ':reports', source)
  if recompute(current, label) then table.insert(emptied, current) end
end
redis.call('HSET', KEYS[3], source, id)
redis.call('HSET', prefix .. id .. ':reports', source, cjson.encode({lon = lon, lat = lat,
  confidence = tonumber(ARGV[9]), first_seen = tonumber(ARGV[10]), last_seen = tonumber(ARGV[11]),
  url = url, model = ARGV[14], u = uncertainty, method = method, label = label, frames = frames,
  flon = alon, flat = alat}))
recompute(id, label)
redis.call('ZADD', KEYS[2], now + ttl, id)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], keep_for) end
return {id, realigned, emptied}
"""
