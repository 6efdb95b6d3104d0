"""The one Lua script a shared state runs per round trip (``wishub_async.redis``).

A round trip carries the operations queued since the last one (calls that ended,
reservations given back, key health reported), then at most one reservation, then a
pull of the key health that changed since the caller last looked. It runs
atomically on the server, with the server's clock (``TIME``), so hosts whose clocks
disagree still share one window.

Keys (``{ns}`` is the namespace, as a cluster hash tag; ``<hk>`` a key's keyed hash):

- ``wishub:{ns}:w:<hk>:<model>``: a sorted set, one member per call counted in the
  window of a configured ``RateLimit``: ``f<id>:<tokens>`` while in flight (scored
  ``reserved + lease + per``: a call whose process died lapses), then
  ``d<id>:<tokens>`` once ended (scored ``ended + per``: the time it stops counting);
- ``wishub:{ns}:t:<hk>:<model>``: the tokens of those members, summed;
- ``wishub:{ns}:a:<hk>:<model>``: an adaptive rate (a hash: rate, peak, level, stamp,
  cut, cuttable, since, successes, probing), the token bucket of ``_budget.AdaptiveRate``;
- ``wishub:{ns}:h:<hk>``: a key's health (a hash: ``q`` quarantined, ``c`` cooling
  until, ``r:<model>`` resting from a model until, ``e`` the last error's name, ``v``
  the change's sequence number, ``rv`` that of the last recovery);
- ``wishub:{ns}:hs`` (a hash: ``s`` the last sequence number, ``e`` an epoch that
  changes when the server lost it) and ``wishub:{ns}:hc`` (a sorted set: each key's
  hash scored by its last change), so a pull fetches only what changed.

Everything written gets a TTL. Times travel as strings (``%.6f``: Lua's own number
formatting keeps 14 digits, too few for epoch seconds) or as seconds relative to the
script's ``now``. The constants of the adaptive rate are ``_budget``'s, filled in below.
"""

from __future__ import annotations

# The adaptive rate's private constants: the script runs the same arithmetic, from
# the same numbers.
from ._budget import (
    _BURST_SECONDS,
    _DECREASE,
    _DEEPEST_CUT,
    _FAR_PROBE,
    _FIRST_DECREASE,
    _FIRST_RATE,
    _LEAST_RATE,
    _LEAST_SAMPLE,
    _MOST_PROBE,
    _NEAR,
    _PROBE,
    _RECOVER,
)

__all__ = ["SCAN", "SCRIPT"]

SCAN = 256
"""At most this many window members are read to find when enough tokens free (the
answer is then an early estimate: the call looks again, and the check itself is exact)."""

_LUA = r"""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local request = cjson.decode(ARGV[1])

local function fmt(x) return string.format('%.6f', x) end

local function extend(key, seconds)
  local ms = math.ceil(seconds * 1000)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- windows of a configured RateLimit ---------------------------------------------------

local function tokens_of(member) return tonumber(string.match(member, ':(%d+)$')) or 0 end

local function expire(w, t)
  local gone = redis.call('ZRANGEBYSCORE', w, '-inf', fmt(now))
  if #gone > 0 then
    local sum = 0
    for _, member in ipairs(gone) do sum = sum + tokens_of(member) end
    redis.call('ZREMRANGEBYSCORE', w, '-inf', fmt(now))
    if sum > 0 then redis.call('DECRBY', t, sum) end
  end
  local count = redis.call('ZCARD', w)
  if count == 0 then
    redis.call('DEL', t)
    return 0, 0
  end
  return count, tonumber(redis.call('GET', t) or '0') or 0
end

local function ends(member, score, per)
  if string.sub(member, 1, 1) == 'd' then return tonumber(score) end
  return now + per  -- in flight: the earliest it can stop counting
end

local function free_at(w, count, used, tokens, requests, limit, per)
  local later = now
  if requests > 0 and count + 1 > requests then
    local over = count + 1 - requests
    local row = redis.call('ZRANGE', w, over - 1, over - 1, 'WITHSCORES')
    if row[1] then later = math.max(later, ends(row[1], row[2], per)) end
  end
  if limit > 0 and tokens > 0 and used + tokens > limit then
    local over = used + tokens - limit
    local rows = redis.call('ZRANGE', w, 0, @SCAN@ - 1, 'WITHSCORES')
    local freed = 0
    for i = 1, #rows, 2 do
      freed = freed + tokens_of(rows[i])
      later = math.max(later, ends(rows[i], rows[i + 1], per))
      if freed >= over then break end
    end
    if freed < over and #rows < 2 * @SCAN@ then later = math.max(later, now + per) end
  end
  return later
end

local function finish(op)  -- {'f', w, t, flying member or '', id, reserved, spent, ago, per}
  local w, t = KEYS[op[2]], KEYS[op[3]]
  if op[4] ~= '' and redis.call('ZREM', w, op[4]) == 1 and op[6] > 0 then
    redis.call('DECRBY', t, op[6])
  end
  local until_ = now - op[8] + op[9]
  if until_ > now and redis.call('ZADD', w, fmt(until_), 'd' .. op[5] .. ':' .. op[7]) == 1 then
    if op[7] > 0 then redis.call('INCRBY', t, op[7]) end
    extend(w, until_ - now + 1)
    extend(t, until_ - now + 1)
  end
end

local function cancel(op)  -- {'c', w, t, flying member, reserved}
  if redis.call('ZREM', KEYS[op[2]], op[4]) == 1 and op[5] > 0 then
    redis.call('DECRBY', KEYS[op[3]], op[5])
  end
end

-- adaptive rates -------------------------------------------------------------------------

local function bucket(a)
  local v = redis.call('HMGET', a, 'rate', 'peak', 'level', 'stamp', 'cut', 'cuttable',
                       'since', 'successes', 'probing')
  if not v[1] then
    return {rate = @FIRST@, peak = 0, level = @FIRST@, stamp = now, cut = 0, cuttable = 1,
            since = now, successes = 0, probing = 0}
  end
  return {rate = tonumber(v[1]), peak = tonumber(v[2]), level = tonumber(v[3]),
          stamp = tonumber(v[4]), cut = tonumber(v[5]), cuttable = tonumber(v[6]),
          since = tonumber(v[7]) or now, successes = tonumber(v[8]) or 0,
          probing = tonumber(v[9]) or 0}
end

local function refill(b)
  local ceiling = math.max(b.level, b.rate * @BURST@ + 1)
  b.level = math.min(b.level + math.max(now - b.stamp, 0) * b.rate, ceiling)
  b.stamp = now
end

local function save(a, b)
  redis.call('HSET', a, 'rate', fmt(b.rate), 'peak', fmt(b.peak), 'level', fmt(b.level),
             'stamp', fmt(b.stamp), 'cut', fmt(b.cut), 'cuttable', b.cuttable,
             'since', fmt(b.since), 'successes', b.successes, 'probing', b.probing)
  redis.call('PEXPIRE', a, math.ceil(request.at * 1000))
end

local function step(b)  -- AdaptiveRate._step (a peak of 0: none yet)
  if b.peak == 0 then return 1 end  -- slow start
  local gap = @RECOVER@ * b.peak - b.rate
  if gap > 0 then return math.min(math.max(gap / (2 * b.rate), @PROBE@ * b.rate), gap) end
  b.probing = 1
  local probe = @FAR_PROBE@
  if b.rate < @NEAR@ * b.peak then probe = @PROBE@ end
  return math.min(probe * b.rate, @MOST_PROBE@)
end

local function finish_rate(op)  -- {'F', a, 'ok'|'rl'|'other', reserved at, ago}
  local a = KEYS[op[2]]
  if redis.call('EXISTS', a) == 0 then return end
  local b = bucket(a)
  if op[3] == 'ok' then
    b.cuttable = 1
    b.successes = b.successes + 1
    b.rate = b.rate + step(b)
  elseif op[3] == 'rl' and b.cuttable == 1 and tonumber(op[4]) >= b.cut then
    local at = now - op[5]  -- AdaptiveRate.finish (a cut of 0: none yet)
    local delivered = math.huge
    if b.probing == 0 and b.successes >= @LEAST_SAMPLE@ and at > b.since then
      delivered = b.successes / (at - b.since)
    end
    local decrease = @DECREASE@
    if b.cut == 0 then decrease = @FIRST_DECREASE@ end
    b.peak = math.min(b.rate, math.max(delivered, b.rate * @DEEPEST_CUT@))
    b.rate = math.max(b.peak * decrease, @LEAST@)
    b.cut, b.since, b.cuttable, b.successes, b.probing = at, at, 0, 0, 0
    refill(b)
    b.level = math.min(b.level, 0)
  end
  save(a, b)
end

local function cancel_rate(op)  -- {'C', a}
  if redis.call('EXISTS', KEYS[op[2]]) == 1 then
    redis.call('HINCRBYFLOAT', KEYS[op[2]], 'level', 1)
  end
end

-- key health -------------------------------------------------------------------------

local function later_of(h, field, until_)
  if until_ <= now then return false end
  if until_ > (tonumber(redis.call('HGET', h, field) or '0') or 0) then
    redis.call('HSET', h, field, fmt(until_))
    return true
  end
  return false
end

-- {'h', h, hk, quarantined, recovered, cooling left, model, resting left, error, ago}
local function report(op)
  local h, hk, at = KEYS[op[2]], op[3], now - op[10]
  local quarantined = redis.call('HGET', h, 'q') == '1'
  local changed, recovered = false, false
  if op[5] == 1 then  -- a probe found the key working: quarantine and cooling lift
    if quarantined or (tonumber(redis.call('HGET', h, 'c') or '0') or 0) > now then
      redis.call('HSET', h, 'q', '0', 'c', '0')
      changed, recovered = true, true
    end
  elseif op[4] == 1 and not quarantined then
    redis.call('HSET', h, 'q', '1')
    changed = true
  end
  if op[6] > 0 and later_of(h, 'c', at + op[6]) then changed = true end
  if op[7] ~= '' and op[8] > 0 and later_of(h, 'r:' .. op[7], at + op[8]) then
    changed = true
  end
  if not changed then return end  -- nothing new: nothing written
  if op[9] ~= '' then redis.call('HSET', h, 'e', op[9]) end
  local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
  redis.call('HSETNX', KEYS[1], 'e', fmt(now))
  redis.call('HSET', h, 'v', seq)
  if recovered then redis.call('HSET', h, 'rv', seq) end
  redis.call('ZADD', KEYS[2], seq, hk)
  local keep = math.max(request.ht, op[6] - op[10] + 1, op[8] - op[10] + 1)
  extend(h, keep)
  extend(KEYS[1], request.ht)
  extend(KEYS[2], request.ht)
end

local function blocked(h, model)
  local v = redis.call('HMGET', h, 'q', 'c', 'r:' .. model, 'e')
  local err = v[4] or ''
  if v[1] == '1' then return {s = 'q', e = err} end
  local cooling = tonumber(v[2] or '0') or 0
  if cooling > now then return {s = 'c', f = cooling - now, e = err} end
  local resting = tonumber(v[3] or '0') or 0
  if resting > now then return {s = 'm', f = resting - now, e = err} end
  return nil
end

-- reservations -----------------------------------------------------------------------

-- {'r', w, t, h, id, tokens, requests or 0, tokens limit or 0, per, lease, model}
local function reserve_window(op)
  local w, t = KEYS[op[2]], KEYS[op[3]]
  local tokens, requests, limit, per = op[6], op[7], op[8], op[9]
  local no = blocked(KEYS[op[4]], op[11])
  if no then return no end
  local count, used = expire(w, t)
  if (requests > 0 and count >= requests) or (limit > 0 and used + tokens > limit) then
    return {s = 'w', n = count, k = used,
            f = free_at(w, count, used, tokens, requests, limit, per) - now}
  end
  redis.call('ZADD', w, fmt(now + op[10] + per), 'f' .. op[5] .. ':' .. tokens)
  if tokens > 0 then redis.call('INCRBY', t, tokens) end
  extend(w, op[10] + per + 1)
  extend(t, op[10] + per + 1)
  count, used = count + 1, used + tokens
  return {s = 'ok', n = count, k = used,
          f = free_at(w, count, used, 0, requests, limit, per) - now}
end

local function reserve_rate(op)  -- {'A', a, h, model}
  local a = KEYS[op[2]]
  local no = blocked(KEYS[op[3]], op[4])
  if no then return no end
  local b = bucket(a)
  refill(b)
  local answer
  if b.level >= 1 then
    b.level = b.level - 1
    answer = {s = 'ok', rate = b.rate, f = math.max(1 - b.level, 0) / b.rate}
  else
    answer = {s = 'w', rate = b.rate, f = (1 - b.level) / b.rate}
  end
  save(a, b)
  return answer
end

-- pull -------------------------------------------------------------------------------

local function pull(since, epoch)
  local hs = redis.call('HMGET', KEYS[1], 'e', 's')
  local current, seq = hs[1] or '', tonumber(hs[2] or '0') or 0
  if current ~= epoch then since = 0 end
  local out = {e = current, s = seq, h = {}}
  if seq > since then
    local changed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf')
    for i, hk in ipairs(changed) do
      out.h[i] = {hk, redis.call('HGETALL', request.hp .. hk)}
    end
  end
  return out
end

local apply = {f = finish, c = cancel, F = finish_rate, C = cancel_rate, h = report}
for _, op in ipairs(request.o) do apply[op[1]](op) end
local out = {now = fmt(now)}
if request.r and request.r[1] == 'r' then out.r = reserve_window(request.r) end
if request.r and request.r[1] == 'A' then out.r = reserve_rate(request.r) end
if request.p then out.p = pull(request.p[1], request.p[2]) end
return cjson.encode(out)
"""

_CONSTANTS = {
    "@SCAN@": SCAN,
    "@FIRST@": _FIRST_RATE,
    "@BURST@": _BURST_SECONDS,
    "@LEAST@": _LEAST_RATE,
    "@DECREASE@": _DECREASE,
    "@RECOVER@": _RECOVER,
    "@PROBE@": _PROBE,
    "@NEAR@": _NEAR,
    "@FAR_PROBE@": _FAR_PROBE,
    "@MOST_PROBE@": _MOST_PROBE,
    "@FIRST_DECREASE@": _FIRST_DECREASE,
    "@LEAST_SAMPLE@": _LEAST_SAMPLE,
    "@DEEPEST_CUT@": _DEEPEST_CUT,
}


def _filled(text: str) -> str:
    for name, value in _CONSTANTS.items():
        text = text.replace(name, repr(value))
    return text


SCRIPT = _filled(_LUA)
"""The script, with the adaptive rate's constants filled in."""
