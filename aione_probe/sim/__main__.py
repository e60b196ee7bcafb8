"""``python -m aione_probe.sim --host 127.0.0.1 --port 8900 [--config sim.toml]``."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from aione_probe.sim.app import create_app
from aione_probe.sim.config import default_sim_config, load_sim_config


def main(argv: list[str] | None = None) -> int:
    """Serve the simulator until interrupted; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m aione_probe.sim", description="Local OpenAI-compatible gateway simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--config", help="sim TOML file (default: the built-in demo models)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        config = load_sim_config(args.config) if args.config else default_sim_config()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"aione-probe sim: http://{args.host}:{args.port}/v1 models={','.join(config.models)}",
        file=sys.stderr,
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
