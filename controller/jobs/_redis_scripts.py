"""The Lua scripts of :class:`~controller.jobs._redis.RedisJobStore`: every change to the
fleet's jobs is one of them, so it is atomic on the server. Keys, under ``P`` =
``<state.redis.prefix>:jobs``::

    P:job:ID          hash: the job (the SQLite row's columns) and, while running, its lease
    P:idem:OWNER:KEY  the id of the job an owner sent with that idempotency key
    P:tiers           set: the tiers that ever had a job
    P:q:TIER          zset id -> created_at: due now, oldest first
    P:w:TIER          zset id -> next_at: waiting for a retry's backoff
    P:r:TIER          zset id -> lease deadline: running, claimed by a replica
    P:u:TIER          zset id -> created_at: unfinished (queued, waiting, running)
    P:d:TIER, P:x:TIER  zset id -> finished_at: done, dead (purged after keep_seconds)
    P:cb              zset id -> when its callback POST is due
    P:bucket:TIER     hash tokens, at: the tier's replay rate, for the whole fleet
    P:fence           counter: each claim's lease token
    P:bytes           counter: the bytes of the jobs kept (bodies, headers, results)
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

_MOVE_BATCH = 1000  # retries made due, leases expired, jobs purged: per tier per call

# Every script's ARGV starts P, offset: the scripts read the time from Redis (TIME), the one
# clock every replica shares; offset is added to it (always 0 but in tests, which move it).
_NOW = """
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
end
local function num(x) return string.format('%.6f', x) end
"""

# ARGV: P, offset, id, owner, idem, tier, created_at, max_jobs, max_bytes, size, field, value,
# ... P:bytes, the bytes of every job kept, grows by the job's size (and its result's, when it
# is done) and shrinks when it is purged.
_ADD = """
local P = ARGV[1]
local ik = P .. ':idem:' .. ARGV[4] .. ':' .. ARGV[5]
local known = redis.call('GET', ik)
if known then return {0, known} end
local total = 0
for _, t in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  total = total + redis.call('ZCARD', P .. ':u:' .. t)
end
if total >= tonumber(ARGV[8]) then return {-1, tostring(total)} end
local used = tonumber(redis.call('GET', P .. ':bytes') or '0')
if used + tonumber(ARGV[10]) > tonumber(ARGV[9]) then return {-2, tostring(used)} end
redis.call('INCRBY', P .. ':bytes', ARGV[10])
local jk = P .. ':job:' .. ARGV[3]
for i = 11, #ARGV, 2 do redis.call('HSET', jk, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', jk, 'size', ARGV[10])
redis.call('SET', ik, ARGV[3])
redis.call('SADD', P .. ':tiers', ARGV[6])
redis.call('ZADD', P .. ':q:' .. ARGV[6], ARGV[7], ARGV[3])
redis.call('ZADD', P .. ':u:' .. ARGV[6], ARGV[7], ARGV[3])
return {1, ARGV[3]}
"""

# ARGV: P, offset, tier, limit, lease_seconds, rate (0: no bucket), burst
_CLAIM = (
    _NOW
    + """
local P, tier, limit, lease = ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = server_now()
local q, w, r = P .. ':q:' .. tier, P .. ':w:' .. tier, P .. ':r:' .. tier
for _, id in ipairs(redis.call('ZRANGEBYSCORE', w, '-inf', num(now), 'LIMIT', 0, __BATCH__)) do
  redis.call('ZREM', w, id)
  redis.call('ZADD', q, redis.call('HGET', P .. ':job:' .. id, 'created_at'), id)
end
local rate, burst, have = tonumber(ARGV[6]), tonumber(ARGV[7]), 0
local take = limit
if rate > 0 then
  local b = redis.call('HMGET', P .. ':bucket:' .. tier, 'tokens', 'at')
  have = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  have = math.min(burst, have + rate * math.max(0, now - at))
  take = math.min(limit, math.floor(have))
end
local ids = {}
if take > 0 then ids = redis.call('ZRANGE', q, 0, take - 1) end
local token = redis.call('INCR', P .. ':fence')
local out = {tostring(token)}
for _, id in ipairs(ids) do
  local jk = P .. ':job:' .. id
  redis.call('ZREM', q, id)
  redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('HSET', jk, 'state', 'running', 'lease', token)
  redis.call('ZADD', r, num(now + lease), id)
  out[#out + 1] = redis.call('HGETALL', jk)
end
if rate > 0 then
  redis.call('HSET', P .. ':bucket:' .. tier, 'tokens', tostring(have - #ids), 'at', num(now))
end
return out
"""
)

# An ended job (done or dead): out of the unfinished set, its callback made due (``due`` on
# Redis's clock; ``shown``, the caller's, is what the job says).
_END = (
    _NOW
    + """
local function ended(P, jk, id, tier, shown, due, cb_state)
  redis.call('ZREM', P .. ':u:' .. tier, id)
  if cb_state == 'waiting' then
    redis.call('HSET', jk, 'cb_state', 'pending', 'cb_next_at', shown)
    redis.call('ZADD', P .. ':cb', due, id)
  end
end
"""
)

# ARGV: P, offset, now, then per job: id, token, kind (done|retry|dead), status, result, error,
# next_at, degraded. now and next_at are the caller's clock: what the job says; a retry is due
# next_at - now after Redis's now.
_FINISH = (
    _END
    + """
local P, now = ARGV[1], ARGV[3]
local rnow = server_now()
local n = 0
for i = 4, #ARGV, 8 do
  local id, token, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = P .. ':job:' .. id
  local cur = redis.call('HMGET', jk, 'state', 'lease', 'tier', 'cb_state')
  if cur[1] == 'running' and cur[2] == token then
    local tier = cur[3]
    redis.call('ZREM', P .. ':r:' .. tier, id)
    redis.call('HDEL', jk, 'lease')
    if kind == 'retry' then
      local wait = math.max(0, tonumber(ARGV[i + 6]) - tonumber(now))
      redis.call('HSET', jk, 'state', 'queued', 'next_at', ARGV[i + 6], 'error', ARGV[i + 5])
      redis.call('ZADD', P .. ':w:' .. tier, num(rnow + wait), id)
    elseif kind == 'done' then
      redis.call('HSET', jk, 'state', 'done', 'finished_at', now, 'result_status', ARGV[i + 3],
        'result', ARGV[i + 4], 'error', '', 'degraded', ARGV[i + 7])
      redis.call('HINCRBY', jk, 'size', #ARGV[i + 4])
      redis.call('INCRBY', P .. ':bytes', #ARGV[i + 4])
      redis.call('ZADD', P .. ':d:' .. tier, now, id)
      ended(P, jk, id, tier, now, num(rnow), cur[4])
    else
      redis.call('HSET', jk, 'state', 'dead', 'finished_at', now, 'error', ARGV[i + 5])
      redis.call('ZADD', P .. ':x:' .. tier, now, id)
      ended(P, jk, id, tier, now, num(rnow), cur[4])
    end
    n = n + 1
  end
end
return n
"""
)

# ARGV: P, offset, now, max_tries, lease_seconds, cut, then per own running job: id, token.
# Renews this replica's leases (deadlines on Redis's clock), then puts back (or kills) the jobs
# whose lease ran out. lease_seconds -1: hands the jobs back (deadline 0), expires none.
_MAINTAIN = (
    _END
    + """
local P, now, max_tries, lease = ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rnow = server_now()
local deadline = '0'
if lease >= 0 then deadline = num(rnow + lease) end
for i = 7, #ARGV, 2 do
  local cur = redis.call('HMGET', P .. ':job:' .. ARGV[i], 'lease', 'tier')
  if cur[1] == ARGV[i + 1] then
    redis.call('ZADD', P .. ':r:' .. cur[2], 'XX', deadline, ARGV[i])
  end
end
local dead, back = {}, 0
if lease < 0 then return {back, dead} end
for _, tier in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  local r = P .. ':r:' .. tier
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', r, '-inf', num(rnow), 'LIMIT', 0,
      __BATCH__)) do
    local jk = P .. ':job:' .. id
    local cur = redis.call('HMGET', jk, 'attempts', 'created_at', 'cb_state')
    redis.call('ZREM', r, id)
    redis.call('HDEL', jk, 'lease')
    if tonumber(cur[1]) >= max_tries then
      redis.call('HSET', jk, 'state', 'dead', 'finished_at', now, 'error', ARGV[6])
      redis.call('ZADD', P .. ':x:' .. tier, now, id)
      ended(P, jk, id, tier, now, num(rnow), cur[3])
      dead[#dead + 1] = redis.call('HGETALL', jk)
    else
      redis.call('HSET', jk, 'state', 'queued', 'next_at', now, 'error', ARGV[6])
      redis.call('ZADD', P .. ':q:' .. tier, cur[2], id)
      back = back + 1
    end
  end
end
return {back, dead}
"""
)

# ARGV: P, offset, limit, hold_seconds: due callbacks, each held (its due time moved on Redis's
# clock) so that one replica at a time posts it.
_CALLBACKS = (
    _NOW
    + """
local P = ARGV[1]
local now = server_now()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':cb', '-inf', num(now), 'LIMIT', 0,
    tonumber(ARGV[3]))) do
  redis.call('ZADD', P .. ':cb', num(now + tonumber(ARGV[4])), id)
  out[#out + 1] = redis.call('HGETALL', P .. ':job:' .. id)
end
return out
"""
)

# ARGV: P, offset, id, state, next_at ('' for none, the caller's clock), wait_seconds
_CALLBACK_RESULT = (
    _NOW
    + """
local P, id = ARGV[1], ARGV[3]
local jk = P .. ':job:' .. id
if redis.call('EXISTS', jk) == 0 then return 0 end
redis.call('HINCRBY', jk, 'cb_attempts', 1)
redis.call('HSET', jk, 'cb_state', ARGV[4], 'cb_next_at', ARGV[5])
if ARGV[4] == 'pending' then
  redis.call('ZADD', P .. ':cb', num(server_now() + tonumber(ARGV[6])), id)
else redis.call('ZREM', P .. ':cb', id) end
return 1
"""
)

# ARGV: P, offset, before, limit. Finished times are the finishing replica's clock: a clock s
# seconds off moves a result's expiry by s (nothing running is touched).
_PURGE = """
local P, limit, n = ARGV[1], tonumber(ARGV[4]), 0
for _, tier in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  for _, set in ipairs({P .. ':d:' .. tier, P .. ':x:' .. tier}) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. ARGV[3], 'LIMIT', 0,
        limit)) do
      if n >= limit then return n end
      local jk = P .. ':job:' .. id
      local cur = redis.call('HMGET', jk, 'cb_state', 'owner', 'idem', 'size')
      if cur[1] ~= 'pending' and cur[1] ~= 'waiting' then
        redis.call('DEL', jk)
        if cur[4] then redis.call('DECRBY', P .. ':bytes', cur[4]) end
        if cur[2] then redis.call('DEL', P .. ':idem:' .. cur[2] .. ':' .. cur[3]) end
        redis.call('ZREM', set, id)
        n = n + 1
      end
    end
  end
end
return n
"""

# ARGV: P, offset -> per tier: name, queued, waiting, running, done, dead, oldest created_at
_QUEUES = """
local P = ARGV[1]
local out = {}
for _, tier in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  local oldest = redis.call('ZRANGE', P .. ':u:' .. tier, 0, 0, 'WITHSCORES')
  out[#out + 1] = {tier, redis.call('ZCARD', P .. ':q:' .. tier),
    redis.call('ZCARD', P .. ':w:' .. tier), redis.call('ZCARD', P .. ':r:' .. tier),
    redis.call('ZCARD', P .. ':d:' .. tier), redis.call('ZCARD', P .. ':x:' .. tier),
    oldest[2] or ''}
end
return out
"""


SCRIPTS: dict[str, str] = {
    name: text.replace("__BATCH__", str(_MOVE_BATCH))
    for name, text in (
        ("add", _ADD),
        ("claim", _CLAIM),
        ("finish", _FINISH),
        ("maintain", _MAINTAIN),
        ("callbacks", _CALLBACKS),
        ("callback_result", _CALLBACK_RESULT),
        ("purge", _PURGE),
        ("queues", _QUEUES),
    )
}
"""Each script's name and its text, registered once per client."""
