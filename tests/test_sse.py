"""The bounded SSE decoder: line endings, splits anywhere, fields, limits."""

from __future__ import annotations

import pytest

from aione_probe.errors import FailureKind, ProtocolError
from aione_probe.sse import Event, SSEDecoder


def decoder(**limits: int) -> SSEDecoder:
    opts = {"max_event_bytes": 1 << 16, "max_response_bytes": 1 << 20, "max_events": 1000}
    opts.update(limits)
    return SSEDecoder(**opts)


def decode_all(chunks: list[bytes], **limits: int) -> list[Event]:
    d = decoder(**limits)
    out: list[Event] = []
    for c in chunks:
        out += d.feed(c)
    return out + d.close()


STREAM = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\n\n'
    b"event: ping\ndata: x\n\n"
    b"id: 7\ndata: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"data: \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    Event('{"a": 1}'),
    Event("x", "ping"),
    Event("line one\nline two", None, "7"),
    Event("no-space", None, "7"),
    Event("été 😀", None, "7"),
    Event("[DONE]", None, "7"),
]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_endings(ending: bytes) -> None:
    assert decode_all([STREAM.replace(b"\n", ending)]) == EXPECTED


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_split_at_every_byte(ending: bytes) -> None:
    raw = STREAM.replace(b"\n", ending)
    for cut in range(len(raw) + 1):
        assert decode_all([raw[:cut], raw[cut:]]) == EXPECTED, cut


def test_one_byte_at_a_time_crlf_and_utf8() -> None:
    raw = STREAM.replace(b"\n", b"\r\n")
    assert decode_all([raw[i : i + 1] for i in range(len(raw))]) == EXPECTED


def test_comments_counted_and_not_events() -> None:
    d = decoder()
    assert d.feed(b": ping\n\n: ping\n\n") == []
    assert d.comments == 2 and d.events == 0


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    d = decoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n\r") == [Event("a")]
    assert d.feed(b"\ndata: b\n\n") == [Event("b")]


def test_empty_data_line_dispatches_empty_event_and_blank_without_data_does_not() -> None:
    assert decode_all([b"data:\n\n", b"event: x\n\n", b"data: y\n\n"]) == [Event(""), Event("y")]


def test_unknown_fields_and_bare_field_names_ignored() -> None:
    assert decode_all([b"retry: 10\nfoo: bar\ndata\ndata: z\n\n"]) == [Event("\nz")]


def test_bom_stripped_at_start_only() -> None:
    assert decode_all([b"\xef\xbb", b"\xbfdata: a\n\n"]) == [Event("a")]


def test_close_flushes_unterminated_line_and_pending_event() -> None:
    d = decoder()
    assert d.feed(b'data: {"x": 1}\n\ndata: tail') == [Event('{"x": 1}')]
    assert d.close() == [Event("tail")]


def test_invalid_utf8_replaced_not_raised() -> None:
    assert decode_all([b"data: \xff\xfe\n\n"]) == [Event("\ufffd\ufffd")]


def test_line_over_limit_fails_without_buffering_rest() -> None:
    d = decoder(max_event_bytes=1024)
    d.feed(b"data: " + b"x" * 1000)
    with pytest.raises(ProtocolError) as err:
        d.feed(b"x" * 100)
    assert err.value.kind is FailureKind.too_large
    assert d.bytes_received == 1106


def test_event_over_limit_across_lines() -> None:
    lines = b"".join(b"data: " + b"y" * 200 + b"\n" for _ in range(10))
    with pytest.raises(ProtocolError) as err:
        decoder(max_event_bytes=1024).feed(lines)
    assert err.value.kind is FailureKind.too_large


def test_response_bytes_limit() -> None:
    d = decoder(max_response_bytes=2048)
    d.feed(b": pad\n\n" * 200)
    with pytest.raises(ProtocolError) as err:
        d.feed(b": pad\n\n" * 200)
    assert err.value.kind is FailureKind.too_large


def test_event_count_limit() -> None:
    d = decoder(max_events=3)
    assert len(d.feed(b"data: a\n\n" * 3)) == 3
    with pytest.raises(ProtocolError) as err:
        d.feed(b"data: a\n\n")
    assert err.value.kind is FailureKind.too_large


def test_done_sentinel() -> None:
    assert Event("[DONE]").is_done and not Event("[DONE] ").is_done
