"""The per-connection send limit, shared by every worker thread and process.

A sliding-window log: each granted send is a timestamp in a Redis sorted set, and a send
is granted only while the set holds fewer than LIMIT entries younger than the window. So
no window of that length ever holds more than LIMIT sends (a token bucket would let a
full bucket plus the refill through: up to twice the limit in one minute). A second,
1/60-of-the-window sub-window allows ceil(LIMIT/60) sends, spreading them evenly instead
of in one burst at the top of each minute. The check and the insert run in one Lua
script on Redis's own clock, so processes on different machines agree.

A `hold` (after a 429 with Retry-After, or 5xx backoff) makes every sender of the
connection wait. Embedded mode (no REDIS_URL) uses the same algorithm in process memory.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

ACQUIRE = """
local key, hold_key = KEYS[1], KEYS[2]
local limit, window, n, member = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local hold = redis.call('PTTL', hold_key)
if hold > 0 then return {0, tostring(hold / 1000)} end
if limit <= 0 then return {n, '0'} end
local sub = window / 60
local burst = math.ceil(limit / 60)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
local recent = redis.call('ZCOUNT', key, '(' .. (now - sub), '+inf')
local free = math.min(limit - used, burst - recent, n)
if free <= 0 then
  local wait
  if used >= limit then
    local oldest = redis.call('ZRANGE', key, used - limit, used - limit, 'WITHSCORES')
    wait = tonumber(oldest[2]) + window - now
  else
    local first = redis.call('ZRANGEBYSCORE', key, '(' .. (now - sub), '+inf', 'WITHSCORES', 'LIMIT', recent - burst, 1)
    wait = tonumber(first[2]) + sub - now
  end
  return {0, tostring(math.max(wait, 0.001))}
end
for i = 1, free do redis.call('ZADD', key, now, member .. ':' .. i) end
redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
return {free, '0'}
"""

# Extend, never shorten, a hold: read and write in one step, so two senders hitting a 429
# at once cannot leave the shorter of their holds.
HOLD = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 0
"""


# Pacing (campaigns with random intervals): one "next send at" per connection. A sender
# reserves the next slot only when it comes within MAX_WAIT seconds, and moves the
# connection's next slot GAP seconds after it (or a break of PAUSE seconds after every
# EVERY-th reserved send), in one script on Redis's clock: any number of workers and
# campaigns share one connection's pace.
PACE = """
local key, count_key = KEYS[1], KEYS[2]
local gap, max_wait, every, pause = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lead = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local slot = math.max(now + lead, tonumber(redis.call('GET', key) or '0'))
if slot - now > max_wait then return {0, tostring(slot - now)} end
if every > 0 then
  local n = redis.call('INCR', count_key)
  redis.call('EXPIRE', count_key, 172800)
  if n % every == 0 then gap = math.max(gap, pause) end
end
redis.call('SET', key, tostring(slot + gap), 'PX', math.ceil((slot + gap - now) * 1000) + 60000)
return {1, tostring(slot - now)}
"""


@dataclass(frozen=True)
class Slot:
    reserved: bool  # True: this sender's send may go out in `wait` seconds
    wait: float  # seconds until the slot (reserved), or until the next one (not reserved)


@dataclass(frozen=True)
class Grant:
    granted: int  # sends allowed now (0..asked)
    wait: float  # when granted is 0: seconds before asking again is worthwhile


class Limiter(Protocol):
    def acquire(self, key: str, *, limit: int, window: float, n: int = 1) -> Grant: ...

    def hold(self, key: str, seconds: float) -> None: ...

    def pace(
        self, key: str, *, gap: float, max_wait: float, every: int = 0, pause: float = 0.0, lead: float = 0.0
    ) -> Slot: ...

    def turn(self, key: str) -> int: ...


def window_seconds() -> float:
    return float(settings.CAMPAIGN_RATE_WINDOW) + float(settings.CAMPAIGN_RATE_SLACK)


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=settings.REDIS_TIMEOUT, socket_connect_timeout=settings.REDIS_TIMEOUT
        )
        self.script = self.client.register_script(ACQUIRE)
        self.hold_script = self.client.register_script(HOLD)
        self.pace_script = self.client.register_script(PACE)

    def acquire(self, key: str, *, limit: int, window: float, n: int = 1) -> Grant:
        """Take up to N sends from KEY's budget of LIMIT per WINDOW seconds (LIMIT 0: no limit,
        only holds apply)."""
        granted, wait = self.script(
            keys=[f"sense:rate:{key}", f"sense:rate:{key}:hold"], args=[limit, window, n, uuid.uuid4().hex]
        )
        return Grant(int(granted), float(wait))

    def hold(self, key: str, seconds: float) -> None:
        """No sends on KEY for SECONDS (extends, never shortens, a current hold)."""
        self.hold_script(keys=[f"sense:rate:{key}:hold"], args=[max(1, int(seconds * 1000))])

    def pace(
        self, key: str, *, gap: float, max_wait: float, every: int = 0, pause: float = 0.0, lead: float = 0.0
    ) -> Slot:
        """Reserve KEY's next send slot (LEAD seconds from now at the earliest) when it comes
        within MAX_WAIT seconds; the slot after it then comes GAP seconds later (PAUSE after
        every EVERY-th send)."""
        reserved, wait = self.pace_script(
            keys=[f"sense:pace:{key}", f"sense:pace:{key}:count"], args=[gap, max_wait, every, pause, lead]
        )
        return Slot(bool(int(reserved)), float(wait))

    def turn(self, key: str) -> int:
        """The next number of KEY's shared counter (round-robin rotation across processes)."""
        pipe = self.client.pipeline()
        pipe.incr(f"sense:turn:{key}")
        pipe.expire(f"sense:turn:{key}", 172800)
        return int(pipe.execute()[0])


class LocalLimiter:
    """The same algorithm for one process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: dict[str, deque[float]] = {}
        self._holds: dict[str, float] = {}
        self._next: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._turns: dict[str, int] = {}

    def acquire(self, key: str, *, limit: int, window: float, n: int = 1) -> Grant:
        with self._lock:
            now = time.monotonic()
            until = self._holds.get(key, 0.0)
            if until > now:
                return Grant(0, until - now)
            if limit <= 0:
                return Grant(n, 0.0)
            log = self._log.setdefault(key, deque())
            while log and log[0] <= now - window:
                log.popleft()
            sub, burst = window / 60, math.ceil(limit / 60)
            recent = [t for t in log if t > now - sub]
            free = min(limit - len(log), burst - len(recent), n)
            if free <= 0:
                if len(log) >= limit:
                    wait = log[len(log) - limit] + window - now
                else:
                    wait = recent[len(recent) - burst] + sub - now
                return Grant(0, max(wait, 0.001))
            log.extend([now] * free)
            return Grant(free, 0.0)

    def hold(self, key: str, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            self._holds[key] = max(self._holds.get(key, 0.0), until)

    def pace(
        self, key: str, *, gap: float, max_wait: float, every: int = 0, pause: float = 0.0, lead: float = 0.0
    ) -> Slot:
        with self._lock:
            now = time.monotonic()
            slot = max(now + lead, self._next.get(key, 0.0))
            if slot - now > max_wait:
                return Slot(False, slot - now)
            if every > 0:
                self._counts[key] = self._counts.get(key, 0) + 1
                if self._counts[key] % every == 0:
                    gap = max(gap, pause)
            self._next[key] = slot + gap
            return Slot(True, slot - now)

    def turn(self, key: str) -> int:
        with self._lock:
            self._turns[key] = self._turns.get(key, 0) + 1
            return self._turns[key]


_lock = threading.Lock()
_limiter: Any = None


def limiter() -> Limiter:
    """The process's limiter: Redis when REDIS_URL is set, in-memory otherwise."""
    global _limiter
    if _limiter is None:
        with _lock:
            if _limiter is None:
                _limiter = RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else LocalLimiter()
    return _limiter  # type: ignore[no-any-return]


def reset() -> None:
    """Forget the process's limiter (tests that change REDIS_URL; forked workers)."""
    global _limiter
    with _lock:
        _limiter = None
