"""Per-gateway admission: a concurrency semaphore and a requests-per-minute limiter."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

WINDOW_S = 60.0


class RateLimiter:
    """At most `per_minute` acquisitions in any sliding 60-second window.

    A sliding window rather than a token bucket: it is exactly what "N requests per
    minute" promises a gateway, and the log is at most `per_minute` timestamps.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more request fits in the window, then record it."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - WINDOW_S:
                    self._starts.popleft()
                if len(self._starts) < self.per_minute:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + WINDOW_S - now)


class Limiter:
    """Concurrency and rate admission for one gateway, applied to every attempt."""

    def __init__(self, max_concurrency: int, rate: RateLimiter | None = None) -> None:
        self._sem = asyncio.Semaphore(max_concurrency)
        self._rate = rate

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one concurrency slot; the rate limit is charged once the slot is free."""
        async with self._sem:
            if self._rate is not None:
                await self._rate.acquire()
            yield
