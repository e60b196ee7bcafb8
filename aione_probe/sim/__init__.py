"""Local OpenAI-compatible gateway simulator (a test and demo tool, not a model).

Personas stand in for models: answers are hashes of (persona seed, prompt), an optional
answer key read from probe files and a tiny arithmetic evaluator. Honest and dishonest
behaviours (substitution, alias echo, truncation reported as stop, cache not discounted,
errors, broken streams, inflated dashboard) are switched per model in `SimConfig` or at
runtime through ``POST /sim/control``.
"""

from aione_probe.sim.app import create_app
from aione_probe.sim.config import ModelSettings, SimConfig, default_sim_config, load_sim_config
from aione_probe.sim.personas import BUILTIN_PERSONAS, Persona
from aione_probe.sim.server import SimServer, run_in_thread

__all__ = [
    "BUILTIN_PERSONAS",
    "ModelSettings",
    "Persona",
    "SimConfig",
    "SimServer",
    "create_app",
    "default_sim_config",
    "load_sim_config",
    "run_in_thread",
]
