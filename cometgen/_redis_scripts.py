"""The Lua scripts behind ``RedisLimiter``: each one is a single atomic step in Redis.

Times are microseconds on Redis' own clock (``TIME``), so hosts need no synchronised clocks.
"""

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"

# KEYS: leases, gate, window, epoch. ARGV: lease id, ttl us, concurrency, adaptive (0/1).
# -> {0, gate wait us} | {1 (full), 0, cap, epoch} | {2 (granted), 0, cap, epoch}
_ACQUIRE = _NOW + """
local gate = tonumber(redis.call('GET', KEYS[2]) or '0')
if gate > now then return {0, gate - now, 0, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[3])
if ARGV[4] == '1' then
  local w = tonumber(redis.call('GET', KEYS[3]) or ARGV[3])
  if w < cap then cap = w end
end
local epoch = tonumber(redis.call('GET', KEYS[4]) or '0')
if redis.call('ZCARD', KEYS[1]) >= cap then return {1, 0, cap, epoch} end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
return {2, 0, cap, epoch}
"""

# KEYS: tat_r, tat_i, gate. ARGV: interval_r us, interval_i us (x images), floor_r, floor_i
# (0 = limit off). -> {0, gate wait us} | {1, delay us, start, end_r, end_i}
_RESERVE = _NOW + """
local gate = tonumber(redis.call('GET', KEYS[3]) or '0')
if gate > now then return {0, gate - now, 0, 0, 0} end
local ir, ii = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = now
local tr = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[3]))
local ti = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[4]))
if ir > 0 and tr > start then start = tr end
if ii > 0 and ti > start then start = ti end
local er, ei = 0, 0
if ir > 0 then
  er = start + ir
  redis.call('SET', KEYS[1], string.format('%d', er), 'PX', math.ceil((er - now) / 1000) + 60000)
end
if ii > 0 then
  ei = start + ii
  redis.call('SET', KEYS[2], string.format('%d', ei), 'PX', math.ceil((ei - now) / 1000) + 60000)
end
return {1, start - now, start, er, ei}
"""

# KEYS: tat_r, tat_i. ARGV: start, end_r, end_i. Hand back the latest reservation only.
_UNRESERVE = """
for i = 1, 2 do
  local v = redis.call('GET', KEYS[i])
  if v and tonumber(ARGV[i + 1]) > 0 and tonumber(v) == tonumber(ARGV[i + 1]) then
    redis.call('SET', KEYS[i], ARGV[1], 'KEEPTTL')
  end
end
return 0
"""

# KEYS: gate. -> remaining gate us (<= 0: open)
_GATE_LEFT = _NOW + "return tonumber(redis.call('GET', KEYS[1]) or '0') - now\n"

# KEYS: gate, tat_r, tat_i. ARGV: delay us. -> remaining gate us
_PAUSE = _NOW + """
local untl = now + tonumber(ARGV[1])
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > g then
  local px = math.ceil(tonumber(ARGV[1]) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', px)
else
  untl = g
end
for i = 2, 3 do
  local v = redis.call('GET', KEYS[i])
  if v and tonumber(v) < untl then
    local px = math.ceil((untl - now) / 1000) + 60000
    redis.call('SET', KEYS[i], string.format('%d', untl), 'PX', px)
  end
end
return untl - now
"""

# KEYS: window, epoch, succ. ARGV: slot epoch, min window, start window. -> window
_DECREASE = """
local e = tonumber(redis.call('GET', KEYS[2]) or '0')
local w = tonumber(redis.call('GET', KEYS[1]) or ARGV[3])
if tonumber(ARGV[1]) ~= e then return w end
w = math.max(tonumber(ARGV[2]), math.floor(w / 2))
redis.call('SET', KEYS[2], e + 1, 'EX', 86400)
redis.call('SET', KEYS[3], 0, 'EX', 86400)
redis.call('SET', KEYS[1], w, 'EX', 86400)
return w
"""

# KEYS: window, succ. ARGV: concurrency, start window. -> window
_INCREASE = """
local w = tonumber(redis.call('GET', KEYS[1]) or ARGV[2])
if w >= tonumber(ARGV[1]) then return w end
local s = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 86400)
if s >= w then
  w = w + 1
  redis.call('SET', KEYS[2], 0, 'EX', 86400)
  redis.call('SET', KEYS[1], w, 'EX', 86400)
end
return w
"""

# KEYS: leases. ARGV: ttl us, restore (1: re-add leases a restarted Redis forgot), ids...
_RENEW = _NOW + """
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV do
  if ARGV[2] == '1' then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
return 0
"""

SCRIPTS = {
    "acquire": _ACQUIRE, "reserve": _RESERVE, "unreserve": _UNRESERVE,
    "gate_left": _GATE_LEFT, "pause": _PAUSE, "decrease": _DECREASE,
    "increase": _INCREASE, "renew": _RENEW,
}
