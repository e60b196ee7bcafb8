"""A persona's sampling signature: categorical choices and pseudo-text.

Logits are hashes of (persona seed, prompt, candidate), so a persona's distribution over
answers is fixed and reproducible while two personas differ. Temperature 0 takes the
argmax; other temperatures sample ``softmax(logits / T)`` with the request's RNG. A
perturbed persona (same seed, ``epsilon > 0``) adds small hashed noise to every logit,
so its greedy text follows the original for a while and then diverges.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence

from aione_probe.sim.personas import Persona
from aione_probe.sim.tokenizer import Tokenizer

_WORD_TEXT = """the of and a to in is it you that he was for on are with as his they be at one have
    this from or had by word but what some we can out other were all there when up use your
    how said an each she which do their time if will way about many then them write would
    like so these her long make thing see him two has look more day could go come did number
    sound no most people my over know water than call first who may down side been now find
    any new work part take get place made live where after back little only round man year
    came show every good me give our under name very through just form sentence great think
    say help low line differ turn cause much mean before move right boy old too same tell
    does set three want air well also play small end put home read hand port large spell add
    even land here must big high such follow act why ask men change went light kind off need
    house picture try us again animal point mother world near build self earth father head
    stand own page should country found answer school grow study still learn plant cover food
    sun four between state keep eye never last let thought city tree cross farm hard start
    might story saw far sea draw left late run while press close night real life few north
    system model signal value measure gateway latency token"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink")
ANIMALS = ("cat", "dog", "lion", "tiger", "elephant", "horse", "owl", "fox", "dolphin", "bear")
FRUITS = ("apple", "banana", "orange", "mango", "cherry", "grape", "pear", "kiwi", "peach")
_CANDIDATES_PER_STEP = 8
_RANGE_LIMIT = 200
# Text is many choices in a row, so its noise is smaller than for a single categorical
# answer; greedy text then keeps a shared prefix of typically a few hundred characters.
_TEXT_NOISE_SHARE = 0.15


def digest(*parts: object) -> bytes:
    """32-byte hash of the parts (the simulator's only source of fixed randomness)."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=32).digest()


def unit(*parts: object) -> float:
    """A uniform value in [0, 1) fixed by the parts."""
    return int.from_bytes(digest(*parts)[:8], "big") / 2**64


def normalize(text: str) -> str:
    """Lower-case, punctuation-free, single-spaced form of a prompt."""
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def categorical_candidates(prompt: str) -> list[str] | None:
    """Candidate answers when `prompt` asks for one word or number, else None."""
    text = normalize(prompt)
    number = re.search(r"number (?:from|between) (-?\d+) (?:and|to) (-?\d+)", text)
    if number:
        low, high = sorted(int(g) for g in number.groups())
        if high - low <= _RANGE_LIMIT:
            return [str(n) for n in range(low, high + 1)]
    listed = re.search(r"(?:one of|choose from|pick from|among)\s*:\s*(.+)$", prompt, re.I)
    if listed:
        options = [o.strip(" .?!\"'") for o in re.split(r",|\bor\b", listed.group(1))]
        options = [o for o in options if o]
        if len(options) >= 2:
            return options
    for pair in ("heads or tails", "yes or no", "true or false"):
        if pair in text:
            return pair.split(" or ")
    for pattern, values in (
        (r"\bcolou?r\b", COLOURS),
        (r"\banimal\b", ANIMALS),
        (r"\bfruit\b", FRUITS),
    ):
        if re.search(pattern, text) and re.search(r"\b(name|pick|choose|favou?rite)\b", text):
            return list(values)
    if re.search(r"\b(one|single) word\b", text):
        start = int.from_bytes(digest("one-word", text)[:4], "big")
        return [WORDS[(start + 37 * i) % len(WORDS)] for i in range(12)]
    return None


def _gumbel(u: float) -> float:
    u = min(max(u, 1e-12), 1 - 1e-12)
    return -math.log(-math.log(u))


def _noise(persona: Persona, *parts: object, share: float = 1.0) -> float:
    if not persona.epsilon:
        return 0.0
    d = digest(persona.perturb_seed, *parts)
    # Irwin-Hall: sum of three uniforms, centred and scaled to unit variance.
    total = sum(int.from_bytes(d[i : i + 4], "big") / 2**32 for i in (0, 4, 8))
    return share * persona.epsilon * (total - 1.5) * 2.0


def choose(logits: Sequence[float], temperature: float, rng: random.Random) -> int:
    """Index drawn from ``softmax(logits / temperature)``; argmax at temperature 0."""
    if temperature <= 0:
        return max(range(len(logits)), key=lambda i: logits[i])
    top = max(logits)
    weights = [math.exp((x - top) / temperature) for x in logits]
    return rng.choices(range(len(logits)), weights=weights)[0]


def categorical_logits(persona: Persona, prompt: str, candidates: Sequence[str]) -> list[float]:
    """The persona's logits over `candidates` for this prompt."""
    key = normalize(prompt)
    return [
        persona.logit_scale * _gumbel(unit(persona.seed, "cat", key, c)) + _noise(persona, key, c)
        for c in candidates
    ]


def sample_categorical(
    persona: Persona,
    prompt: str,
    candidates: Sequence[str],
    temperature: float,
    rng: random.Random,
) -> str:
    """Draw one candidate from the persona's distribution for `prompt`."""
    logits = categorical_logits(persona, prompt, candidates)
    return candidates[choose(logits, temperature, rng)]


def generate_text(
    persona: Persona,
    context_key: str,
    tokenizer: Tokenizer,
    budget: int,
    temperature: float,
    rng: random.Random,
) -> str:
    """Pseudo-text of the persona's natural length, stopping early once past `budget` tokens.

    Each word is chosen among hashed candidates conditioned on the context, the position
    and the previous word, so greedy text is fixed per (seed, context).
    """
    low, high = persona.length_tokens
    target = low + int(unit(persona.seed, "len", context_key) * (high - low + 1))
    words: list[str] = []
    tokens = 0
    prev = ""
    since_stop = 0
    limit = min(target, budget + 1)
    while tokens < limit:
        pos = len(words)
        d = digest(persona.seed, "txt", context_key, pos, prev)
        candidates = [
            WORDS[int.from_bytes(d[2 * i : 2 * i + 2], "big") % len(WORDS)]
            for i in range(_CANDIDATES_PER_STEP)
        ]
        logits = [
            persona.logit_scale * _gumbel(d[16 + 2 * i] / 256 + d[17 + 2 * i] / 65536)
            + _noise(persona, "txt", context_key, pos, prev, i, share=_TEXT_NOISE_SHARE)
            for i in range(_CANDIDATES_PER_STEP)
        ]
        word = candidates[choose(logits, temperature, rng)]
        piece = word.capitalize() if since_stop == 0 else word
        since_stop += 1
        if since_stop >= 5 and d[0] % 5 == 0:
            piece += "."
            since_stop = 0
        elif since_stop >= 3 and d[1] % 11 == 0:
            piece += ","
        piece = piece if not words else " " + piece
        words.append(piece)
        tokens += tokenizer.count(piece)
        prev = word
    text = "".join(words).rstrip(",")
    return text if text.endswith(".") else text + "."
