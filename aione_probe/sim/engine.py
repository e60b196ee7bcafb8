"""Decide one simulated completion: who answers, what, how many tokens, how fast.

This is a simulation for tests and demos: answers come from persona hashes, an optional
answer key and a tiny arithmetic evaluator, never from a language model.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from aione_probe.sim.answers import (
    Answer,
    AnswerKey,
    arithmetic,
    minimal_instance,
    wrong_text,
)
from aione_probe.sim.cache import PrefixCache
from aione_probe.sim.config import ModelSettings, SimConfig
from aione_probe.sim.personas import Persona
from aione_probe.sim.protocol import SimError, fault_error, tool_call_id
from aione_probe.sim.sampling import (
    categorical_candidates,
    digest,
    generate_text,
    sample_categorical,
    unit,
)
from aione_probe.sim.tokenizer import Piece, Tokenizer, get_tokenizer, truncate

_IDENTITY = re.compile(r"\b(which|what) (model|llm|ai)\b|\bwho are you\b|\bwhat are you\b", re.I)
_REFUSE = re.compile(r"\b(bomb|explosives?|malware|ransomware|nerve agent|bioweapon)\b", re.I)


@dataclass(frozen=True)
class ChatBody:
    """The parts of a chat-completions request body the simulator uses."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float = 1.0
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None


def parse_body(body: Any) -> ChatBody:
    """Validate a request body.

    Raises:
        SimError: 400 invalid_request_error for a malformed body.
    """

    def bad(message: str, param: str | None = None) -> SimError:
        return SimError(400, message, "invalid_request_error", "invalid_request", param=param)

    if not isinstance(body, dict):
        raise bad("Request body must be a JSON object.")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a model parameter", "model")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise bad("'messages' must be a non-empty array of objects", "messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise bad("max_tokens must be a positive integer", "max_tokens")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise bad("temperature must be between 0 and 2", "temperature")
    options = body.get("stream_options") or {}
    return ChatBody(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=float(temperature),
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        tools=body.get("tools") or None,
        tool_choice=body.get("tool_choice"),
        response_format=body.get("response_format"),
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
    )


@dataclass
class Completion:
    """One decided answer, ready to be rendered plain or streamed."""

    persona: Persona
    response_model: str
    pieces: list[Piece]
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, Any]
    cost_rmb: float
    ttft_s: float
    token_s: float
    visible_tokens: int
    rng: random.Random = field(repr=False)

    @property
    def content(self) -> str:
        """The visible answer text."""
        return "".join(text for text, _ in self.pieces)


class Engine:
    """Stateful part of the simulator: config, prefix caches, answer key, randomness."""

    def __init__(self, config: SimConfig, answer_key: AnswerKey) -> None:
        self.config = config
        self.answer_key = answer_key
        self.cache = PrefixCache()
        self.rng = random.Random(config.seed)

    def settings(self, model: str) -> ModelSettings:
        """Settings of a served model.

        Raises:
            SimError: 404 model_not_found.
        """
        try:
            return self.config.models[model]
        except KeyError:
            raise SimError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
                param="model",
            ) from None

    def complete(self, req: ChatBody) -> Completion:
        """Decide the completion for `req`, or raise the SimError the model returns."""
        settings = self.settings(req.model)
        if settings.error_rate and self.rng.random() < settings.error_rate:
            status = self.rng.choice(settings.error_statuses)
            raise fault_error(status, settings.retry_after_s)
        name = settings.persona
        if settings.substitute and self.rng.random() < settings.substitute_share:
            name = settings.substitute
        persona = self.config.personas[name]
        tok = get_tokenizer(persona.tokenizer)
        prompt_pieces = tok.prompt_pieces(req.messages, req.tools)
        prompt_tokens = sum(w for _, w in prompt_pieces) + tok.reply_priming
        if prompt_tokens + (req.max_tokens or 0) > persona.context_window:
            raise SimError(
                400,
                f"This model's maximum context length is {persona.context_window} tokens. "
                f"However, you requested {prompt_tokens + (req.max_tokens or 0)} tokens "
                f"({prompt_tokens} in the messages, {req.max_tokens or 0} in the completion). "
                "Please reduce the length of the messages or completion.",
                "invalid_request_error",
                "context_length_exceeded",
                param="messages",
            )
        cached = self.cache.lookup_and_store(
            f"{req.model}|{persona.name}", prompt_pieces, prompt_tokens
        )
        rng = self._request_rng(req)
        budget = req.max_tokens or (persona.context_window - prompt_tokens)
        content, calls = _Answerer(persona, tok, self.answer_key, req, rng).answer(budget)
        pieces, tool_calls, cut = _fit(tok, content, calls, budget)
        reasoning = _reasoning_tokens(persona, rng)
        visible = sum(w for _, w in pieces) + sum(tok.count(_call_text(c)) for c in tool_calls)
        completion_tokens = visible + reasoning
        if cut:
            finish = "stop" if settings.truncation_reported_as_stop else "length"
        else:
            finish = "tool_calls" if tool_calls else "stop"
        billed_cached = cached if settings.cache_discount_honoured else 0
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if settings.cache_field == "openai":
            usage["prompt_tokens_details"] = {"cached_tokens": billed_cached, "audio_tokens": 0}
        if persona.reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0}
        cost = (
            (prompt_tokens - billed_cached) * settings.price_input
            + billed_cached * settings.price_cached_input
            + completion_tokens * settings.price_output
        ) / 1e6
        scale = settings.latency_multiplier * self.config.time_scale
        ttft = max(0.0, rng.gauss(persona.ttft_s, persona.ttft_jitter_s))
        ttft += (prompt_tokens - cached) / persona.prefill_tps + reasoning / persona.decode_tps
        return Completion(
            persona=persona,
            response_model=_echo(settings, persona, req.model),
            pieces=pieces,
            tool_calls=tool_calls,
            finish_reason=finish,
            usage=usage,
            cost_rmb=cost,
            ttft_s=ttft * scale,
            token_s=scale / persona.decode_tps,
            visible_tokens=visible,
            rng=rng,
        )

    def _request_rng(self, req: ChatBody) -> random.Random:
        if req.seed is None:
            return random.Random(self.rng.getrandbits(64))
        key = json.dumps(req.messages, sort_keys=True, default=str)
        return random.Random(int.from_bytes(digest(req.seed, req.model, key)[:8], "big"))


def _echo(settings: ModelSettings, persona: Persona, requested: str) -> str:
    if settings.echo_model == "requested":
        return requested
    if settings.echo_model == "alias":
        return persona.alias or requested
    return settings.echo_model


def _reasoning_tokens(persona: Persona, rng: random.Random) -> int:
    if not persona.reasoning:
        return 0
    low, high = persona.reasoning_tokens
    return rng.randint(low, high)


def _call_text(call: dict[str, Any]) -> str:
    return call["function"]["name"] + call["function"]["arguments"]


def _fit(
    tok: Tokenizer, content: str, calls: list[dict[str, Any]], budget: int
) -> tuple[list[Piece], list[dict[str, Any]], bool]:
    """Cut content, or the first tool call's arguments, to `budget` tokens."""
    pieces, cut = truncate(tok.encode(content), budget)
    if not calls:
        return pieces, [], cut
    call = calls[0]
    name_tokens = tok.count(call["function"]["name"])
    args, cut = truncate(tok.encode(call["function"]["arguments"]), max(0, budget - name_tokens))
    if cut:
        call = {**call, "function": {**call["function"], "arguments": "".join(t for t, _ in args)}}
    return pieces, [call], cut


def _user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return ""


class _Answerer:
    """Chooses the answer text or tool call for one request."""

    def __init__(
        self, persona: Persona, tok: Tokenizer, key: AnswerKey, req: ChatBody, rng: random.Random
    ) -> None:
        self.persona, self.tok, self.key, self.req, self.rng = persona, tok, key, req, rng
        self.prompt = _user_text(req.messages)
        self.greedy = req.temperature == 0

    def answer(self, budget: int) -> tuple[str, list[dict[str, Any]]]:
        forced = self._forced_tool()
        keyed = self.key.lookup(self.prompt)
        if forced is not None:
            args = keyed.arguments if keyed and keyed.tool_name == forced else None
            return "", [self._call(forced, args)]
        if keyed is not None:
            return self._keyed(keyed)
        text = self._free_text(budget)
        return self._json_mode(text), []

    def _correct(self, difficulty: str) -> bool:
        u = unit(self.persona.seed, "skill", self.prompt) if self.greedy else self.rng.random()
        return u < self.persona.skill_for(difficulty)

    def _wrong_rng(self) -> random.Random:
        if not self.greedy:
            return self.rng
        return random.Random(int.from_bytes(digest(self.persona.seed, self.prompt)[:8], "big"))

    def _keyed(self, answer: Answer) -> tuple[str, list[dict[str, Any]]]:
        correct = self._correct(answer.difficulty)
        if answer.kind == "tool" and self.req.tool_choice != "none":
            name = answer.tool_name or self._first_tool()
            if name and correct:
                return "", [self._call(name, answer.arguments)]
            return f"I would use the {name or 'requested'} tool for this.", []
        if answer.kind == "json":
            body = json.dumps(minimal_instance(answer.schema))
            return (body if correct else f"Here is the JSON: {body}"), []
        text = answer.text if correct else wrong_text(answer.text, self._wrong_rng())
        return self._json_mode(text), []

    def _free_text(self, budget: int) -> str:
        if _REFUSE.search(self.prompt):
            return self.persona.refusal
        if _IDENTITY.search(self.prompt):
            return self.persona.identity
        candidates = categorical_candidates(self.prompt)
        if candidates:
            pick = sample_categorical(
                self.persona, self.prompt, candidates, self.req.temperature, self.rng
            )
            return pick + self.persona.answer_suffix
        computed = arithmetic(self.prompt)
        if computed is not None:
            result, difficulty = computed
            return result if self._correct(difficulty) else wrong_text(result, self._wrong_rng())
        context = json.dumps(self.req.messages, sort_keys=True, default=str)
        return generate_text(
            self.persona, context, self.tok, budget, self.req.temperature, self.rng
        )

    def _json_mode(self, text: str) -> str:
        fmt = self.req.response_format or {}
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            return json.dumps(minimal_instance(schema))
        if fmt.get("type") == "json_object":
            try:
                if isinstance(json.loads(text), dict):
                    return text
            except ValueError:
                pass
            return json.dumps({"answer": text})
        return text

    def _forced_tool(self) -> str | None:
        choice = self.req.tool_choice
        if not self.req.tools:
            return None
        if isinstance(choice, dict):
            return (choice.get("function") or {}).get("name")
        if choice == "required":
            return self._first_tool()
        return None

    def _first_tool(self) -> str | None:
        for tool in self.req.tools or []:
            name = (tool.get("function") or {}).get("name")
            if name:
                return str(name)
        return None

    def _call(self, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        if arguments is None:
            params = next(
                (
                    (t.get("function") or {}).get("parameters")
                    for t in self.req.tools or []
                    if (t.get("function") or {}).get("name") == name
                ),
                None,
            )
            arguments = minimal_instance(params or {"type": "object", "properties": {}})
        return {
            "id": tool_call_id(self.rng),
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
