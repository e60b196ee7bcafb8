"""Run the synchronous `Store` on one worker thread, off the event loop that times probes.

One thread serialises every database call: SQLite allows a single writer, and no query
ever stalls the loop that measures time to first token.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aione_probe.store import Store

T = TypeVar("T")


class AsyncStore:
    """Awaitable access to a `Store`: ``await astore.call(Store.spend, "gw", day)``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aione-store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(store, *args, **kwargs)`` on the store thread and await its result."""
        loop = asyncio.get_running_loop()
        bound = functools.partial(fn, self.store, *args, **kwargs)
        return await loop.run_in_executor(self._executor, bound)

    def close(self) -> None:
        """Wait for queued writes, then stop the thread."""
        self._executor.shutdown(wait=True)
