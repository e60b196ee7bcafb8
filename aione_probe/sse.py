"""A bounded, incremental Server-Sent Events decoder.

Follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; ``:`` lines are
comments (keep-alives); ``data:`` lines of one event are joined with ``"\\n"``; ``event:``
and ``id:`` are kept; a blank line dispatches the event. Bytes may be split anywhere,
including inside a UTF-8 sequence or between the CR and LF of one line ending, because
lines are decoded only once they are complete.

Everything is bounded so a hostile gateway cannot exhaust memory: a line or an event
larger than `max_event_bytes` fails as soon as the bound is passed (the rest is never
buffered), as do more than `max_response_bytes` in total or more than `max_events` events.
Those failures raise `ProtocolError` with kind ``too_large``.

One deliberate leniency: at `close()`, a final line without a line ending and an event
without its closing blank line are still dispatched, because real gateways end streams
that way. A stream cut inside a JSON payload then fails when the payload is parsed.
Whether a stream that ended without ``[DONE]`` is complete is the protocol's call
(the gateway client accepts it once a finish reason was seen).
"""

from __future__ import annotations

from dataclasses import dataclass

from aione_probe.errors import FailureKind, ProtocolError

DONE = "[DONE]"
_LINE_ENDS = (b"\n", b"\r")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: `event` is None when the stream did not name a type."""

    data: str
    event: str | None = None
    id: str | None = None

    @property
    def is_done(self) -> bool:
        """True for OpenAI's ``data: [DONE]`` end-of-stream sentinel."""
        return self.data == DONE


class SSEDecoder:
    """Turn byte chunks into `Event`s, enforcing size and count limits.

    Example:
        >>> d = SSEDecoder(max_event_bytes=1024, max_response_bytes=4096, max_events=10)
        >>> d.feed(b"data: hel") + d.feed(b"lo\\r\\n\\r\\n")
        [Event(data='hello', event=None, id=None)]
    """

    def __init__(self, *, max_event_bytes: int, max_response_bytes: int, max_events: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_response_bytes = max_response_bytes
        self.max_events = max_events
        self.bytes_received = 0
        self.events = 0
        self.comments = 0
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._skip_lf = False
        self._at_start = True
        self._data: list[str] = []
        self._data_len = 0
        self._event_type: str | None = None
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode one chunk; return the events it completed.

        Raises:
            ProtocolError: kind ``too_large`` when a limit is passed.
        """
        self.bytes_received += len(chunk)
        if self.bytes_received > self.max_response_bytes:
            raise _too_large(f"response exceeded {self.max_response_bytes} bytes")
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if b"\n" not in chunk and b"\r" not in chunk:
            self._partial.append(chunk)
            self._partial_len += len(chunk)
            if self._partial_len > self.max_event_bytes:
                raise _too_large(f"an event line exceeded {self.max_event_bytes} bytes")
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
        lines = chunk.splitlines(keepends=True)
        if not lines[-1].endswith(_LINE_ENDS):
            tail = lines.pop()
            if len(tail) > self.max_event_bytes:
                raise _too_large(f"an event line exceeded {self.max_event_bytes} bytes")
            self._partial.append(tail)
            self._partial_len = len(tail)
        elif lines[-1].endswith(b"\r"):
            # A CR at the end of a chunk may be the first half of a CRLF.
            self._skip_lf = True
        out: list[Event] = []
        for line in lines:
            self._line(line.rstrip(b"\r\n"), out)
        return out

    def close(self) -> list[Event]:
        """End of stream: flush a final unterminated line and a pending event."""
        out: list[Event] = []
        if self._partial:
            line = b"".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
            self._line(line, out)
        self._dispatch(out)
        return out

    def _line(self, raw: bytes, out: list[Event]) -> None:
        if len(raw) > self.max_event_bytes:
            raise _too_large(f"an event line exceeded {self.max_event_bytes} bytes")
        line = raw.decode("utf-8", "replace")
        if self._at_start:
            self._at_start = False
            line = line.removeprefix("\ufeff")
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            self.comments += 1
            return
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data_len += len(raw)
            if self._data_len > self.max_event_bytes:
                raise _too_large(f"an event exceeded {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self._last_id = value

    def _dispatch(self, out: list[Event]) -> None:
        if not self._data:
            self._event_type = None
            return
        self.events += 1
        if self.events > self.max_events:
            raise _too_large(f"stream exceeded {self.max_events} events")
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        out.append(Event(data, self._event_type or None, self._last_id))
        self._data = []
        self._data_len = 0
        self._event_type = None


def _too_large(message: str) -> ProtocolError:
    return ProtocolError(message, FailureKind.too_large)
