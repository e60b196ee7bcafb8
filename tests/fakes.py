"""Test doubles shared by the gateway tests: a fake clock and a body paced by it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx


class FakeClock:
    """A clock the test moves by hand (``clock.t = 1.5``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Body(httpx.AsyncByteStream):
    """A response body whose chunks arrive at scripted fake-clock times."""

    def __init__(self, chunks: list[tuple[float, bytes]], clock: FakeClock) -> None:
        self.chunks = chunks
        self.clock = clock

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for at, data in self.chunks:
            self.clock.t = at
            yield data
