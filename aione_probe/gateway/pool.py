"""A connection pool split into small httpx clients ("shards").

httpcore 1.0's pool re-scans every connection, with a nested scan for each idle one,
each time a request starts or ends: O(connections²) work per request. At 200 pooled
keep-alive connections that costs milliseconds of CPU per request and skews the very
timings we measure. Shards of at most `SHARD_SIZE` connections keep that bookkeeping
small. Requests fill the lowest shard with room first, so sequential traffic always
reuses the same warm connection.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

SHARD_SIZE = 8


class ShardedPool:
    """`max_connections` connections across httpx clients of at most `shard_size` each."""

    def __init__(
        self,
        make_client: Callable[[int], httpx.AsyncClient],
        max_connections: int,
        shard_size: int = SHARD_SIZE,
    ) -> None:
        """Build the shards.

        Args:
            make_client: builds one client given its connection limit.
            max_connections: total connections across shards.
            shard_size: connections per shard (the last shard takes the remainder).
        """
        full, rest = divmod(max_connections, shard_size)
        self._caps = [shard_size] * full + ([rest] if rest else [])
        self.clients = [make_client(cap) for cap in self._caps]
        self._load = [0] * len(self._caps)

    def acquire(self) -> httpx.AsyncClient:
        """The shard for the next request: the lowest one with a free connection."""
        best = 0
        for i, cap in enumerate(self._caps):
            if self._load[i] < cap:
                best = i
                break
            if self._load[i] - cap < self._load[best] - self._caps[best]:
                best = i
        self._load[best] += 1
        return self.clients[best]

    def release(self, client: httpx.AsyncClient) -> None:
        """Give back a shard taken with `acquire`."""
        self._load[self.clients.index(client)] -= 1

    async def aclose(self) -> None:
        """Close every shard."""
        for client in self.clients:
            await client.aclose()
