"""Toy tokenizer families for the simulator.

Each family splits text into pieces with simple, deterministic rules so that token
counts differ between families in the ways real tokenizers differ (long words, digit
runs, CJK, emoji) and the authenticity tokenizer signal can tell them apart. A piece is
``(text, tokens)``: a piece usually weighs one token, a CJK character or an emoji may
weigh several, and joining the piece texts gives back the input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

Piece = tuple[str, int]

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf"
_LETTERS = "A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"
_PRETOKEN = re.compile(
    rf"(?P<cjk>[{_CJK}])|(?P<emoji>[{_EMOJI}])|(?P<word> ?[{_LETTERS}]+)"
    r"|(?P<digits>\d+)|(?P<space>\s+)|(?P<other>.)",
    re.DOTALL,
)
IMAGE_PART_TOKENS = 85


@dataclass(frozen=True)
class Tokenizer:
    """One tokenizer family: splitting rules plus its chat-template overhead.

    Attributes:
        name: Family name, e.g. ``"bpe-a"``.
        word_whole: Words up to this many characters (leading space included) are one token.
        word_chunk: Longer words are split every `word_chunk` characters.
        digit_group: Digit runs are split every `digit_group` digits.
        cjk_tokens: Tokens per CJK character.
        emoji_tokens: Tokens per emoji.
        space_run_is_one: Whether a whitespace run is one token (else one per character).
        per_message: Template tokens added per chat message.
        reply_priming: Template tokens added once to prime the assistant reply.
    """

    name: str
    word_whole: int
    word_chunk: int
    digit_group: int
    cjk_tokens: int
    emoji_tokens: int
    space_run_is_one: bool
    per_message: int
    reply_priming: int

    def encode(self, text: str) -> list[Piece]:
        """Split `text` into weighted pieces."""
        pieces: list[Piece] = []
        for match in _PRETOKEN.finditer(text):
            kind, token = match.lastgroup, match.group()
            if kind == "word":
                if len(token) <= self.word_whole:
                    pieces.append((token, 1))
                else:
                    pieces.extend(_chunks(token, self.word_chunk))
            elif kind == "digits":
                pieces.extend(_chunks(token, self.digit_group))
            elif kind == "cjk":
                pieces.append((token, self.cjk_tokens))
            elif kind == "emoji":
                pieces.append((token, self.emoji_tokens))
            elif kind == "space" and not self.space_run_is_one:
                pieces.extend((ch, 1) for ch in token)
            else:
                pieces.append((token, 1))
        return pieces

    def count(self, text: str) -> int:
        """Number of tokens in `text`."""
        return sum(weight for _, weight in self.encode(text))

    def prompt_pieces(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[Piece]:
        """Pieces of a whole chat prompt, template markers included.

        Each message starts with a marker piece weighing `per_message`; tool definitions
        are counted as their compact JSON. The reply priming is not included.
        """
        pieces: list[Piece] = []
        if tools:
            pieces.append(("<tools>", self.per_message))
            pieces.extend(self.encode(json.dumps(tools, separators=(",", ":"), sort_keys=True)))
        for message in messages:
            pieces.append((f"<{message.get('role', 'user')}>", self.per_message))
            pieces.extend(_message_pieces(self, message))
        return pieces

    def count_prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> int:
        """Prompt tokens of a chat request: contents plus template overhead."""
        return sum(w for _, w in self.prompt_pieces(messages, tools)) + self.reply_priming


def _chunks(token: str, size: int) -> list[Piece]:
    return [(token[i : i + size], 1) for i in range(0, len(token), size)]


def _message_pieces(tok: Tokenizer, message: dict[str, Any]) -> list[Piece]:
    content = message.get("content")
    pieces: list[Piece] = []
    if isinstance(content, str):
        pieces.extend(tok.encode(content))
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                pieces.extend(tok.encode(str(part.get("text", ""))))
            else:
                pieces.append((f"<{part.get('type')}>", IMAGE_PART_TOKENS))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        pieces.extend(tok.encode(f"{function.get('name', '')}{function.get('arguments', '')}"))
    return pieces


FAMILIES: dict[str, Tokenizer] = {
    t.name: t
    for t in (
        Tokenizer("bpe-a", 6, 4, 3, 1, 2, True, per_message=3, reply_priming=3),
        Tokenizer("bpe-b", 3, 3, 1, 2, 3, True, per_message=5, reply_priming=1),
        Tokenizer("spm-c", 5, 5, 1, 1, 4, False, per_message=7, reply_priming=2),
    )
}


def get_tokenizer(name: str) -> Tokenizer:
    """Return the tokenizer family called `name`.

    Raises:
        KeyError: if no such family exists.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown tokenizer family {name!r} (known: {sorted(FAMILIES)})") from None


def truncate(pieces: list[Piece], max_tokens: int) -> tuple[list[Piece], bool]:
    """Keep the leading pieces that fit in `max_tokens`; report whether any were cut."""
    kept: list[Piece] = []
    total = 0
    for piece in pieces:
        if total + piece[1] > max_tokens:
            return kept, True
        kept.append(piece)
        total += piece[1]
    return kept, False
