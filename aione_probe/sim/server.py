"""Run the simulator with uvicorn in a background thread (tests, demo, benchmarks)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn

from aione_probe.sim.app import SimState, create_app
from aione_probe.sim.config import SimConfig

_START_TIMEOUT_S = 10.0
# Longer than uvicorn's 5 s so a client reusing a pooled connection between test batches
# rarely races the server closing it.
_KEEP_ALIVE_S = 30


class SimServer:
    """A simulator listening on loopback; use as a context manager or call `stop()`.

    Attributes:
        base_url: OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``.
        url: Server root, e.g. ``http://127.0.0.1:PORT`` (dashboard and control live here).
        state: The running app's `SimState` (config, engine, request log).
    """

    def __init__(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        app = create_app(config)
        self.state: SimState = app.state.sim
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                log_config=None,  # propagate to the root handlers, which scrub secrets
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=1,
                timeout_keep_alive=_KEEP_ALIVE_S,
                backlog=4096,
            )
        )
        self._thread = threading.Thread(target=self._server.run, name="aione-sim", daemon=True)
        self._host = host
        self.url = ""
        self.base_url = ""

    def start(self) -> SimServer:
        """Start serving and wait until the socket listens.

        Raises:
            RuntimeError: if uvicorn did not start in time.
        """
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("simulator failed to start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{port}"
        self.base_url = f"{self.url}/v1"
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Start a simulator in a background thread (port 0 = a free port).

    Example:
        >>> with run_in_thread(default_sim_config(time_scale=0)) as sim:  # doctest: +SKIP
        ...     httpx.get(f"{sim.base_url}/models")
    """
    return SimServer(config, host, port).start()
