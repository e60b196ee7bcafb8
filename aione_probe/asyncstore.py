"""Run the synchronous `Store` on one worker thread, off the event loop that times probes.

One thread serialises every database call: SQLite allows a single writer, and no query
ever stalls the loop that measures time to first token. (Fleet mode gives analysis and
reports a second `AsyncStore` of their own on PostgreSQL: see `Service.analysis_store`.)

With ``retry_disconnects=True`` (fleet mode) a call that fails because the database
cannot be reached is retried with exponential backoff until it succeeds: a run in
flight keeps its observations in memory and writes them when the database is back.
`connected` is False meanwhile (``/healthz`` reports it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from aione_probe.store import Store

T = TypeVar("T")
log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 30.0)
"""First and longest wait between retries of a call that lost the database."""


def is_disconnect(exc: BaseException) -> bool:
    """Whether `exc` means the database could not be reached (not a bad query)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # psycopg's OperationalError: connection refused, reset, server closed it.
        return type(exc.orig).__name__ in ("OperationalError", "InterfaceError")
    return False


class AsyncStore:
    """Awaitable access to a `Store`: ``await astore.call(Store.spend, "gw", day)``."""

    def __init__(self, store: Store, *, retry_disconnects: bool = False) -> None:
        self.store = store
        self.retry_disconnects = retry_disconnects
        self.connected = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aione-store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(store, *args, **kwargs)`` on the store thread and await its result."""
        loop = asyncio.get_running_loop()
        bound = functools.partial(fn, self.store, *args, **kwargs)
        delay = BACKOFF_S[0]
        while True:
            try:
                result = await loop.run_in_executor(self._executor, bound)
            except Exception as exc:
                if not (self.retry_disconnects and is_disconnect(exc)):
                    raise
                if self.connected:
                    log.error("database unreachable (%s); retrying", type(exc.orig).__name__)
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            if not self.connected:
                log.info("database reachable again")
            self.connected = True
            return result

    def close(self) -> None:
        """Wait for queued writes, then stop the thread."""
        self._executor.shutdown(wait=True)
