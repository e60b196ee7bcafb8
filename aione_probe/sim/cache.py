"""Prompt-prefix cache, shaped like OpenAI's automatic prompt caching.

Prompts of at least 1024 tokens are cacheable in 128-token blocks: the cached length
of a request is the longest block boundary (1024, 1152, ...) whose prefix was seen
before by the same (model, persona).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from aione_probe.sim.tokenizer import Piece

MIN_CACHEABLE = 1024
BLOCK = 128


class PrefixCache:
    """LRU set of prefix hashes per cache scope."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._seen: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._capacity = capacity

    def lookup_and_store(self, scope: str, pieces: list[Piece], total_tokens: int) -> int:
        """Return the cached token count for this prompt and remember its prefixes.

        Args:
            scope: Cache partition, e.g. ``"model|persona"``.
            pieces: Prompt pieces in order (template markers included).
            total_tokens: Prompt tokens; boundaries beyond it are ignored.
        """
        if total_tokens < MIN_CACHEABLE:
            return 0
        boundaries = _boundary_hashes(pieces, total_tokens)
        cached = 0
        for length, key in boundaries:
            if (scope, key) in self._seen:
                cached = length
                self._seen.move_to_end((scope, key))
        for _, key in boundaries:
            self._seen[(scope, key)] = None
            self._seen.move_to_end((scope, key))
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return cached

    def clear(self) -> None:
        """Forget every prefix."""
        self._seen.clear()


def _boundary_hashes(pieces: list[Piece], total_tokens: int) -> list[tuple[int, bytes]]:
    hasher = hashlib.sha256()
    out: list[tuple[int, bytes]] = []
    next_boundary = MIN_CACHEABLE
    tokens = 0
    for text, weight in pieces:
        hasher.update(text.encode())
        hasher.update(b"\x00")
        tokens += weight
        # A piece straddling a boundary belongs to the block it ends in.
        while tokens >= next_boundary and next_boundary <= total_tokens:
            out.append((next_boundary, hasher.copy().digest()))
            next_boundary += BLOCK
    return out
