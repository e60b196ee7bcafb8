"""aione-probe: independent verification of OpenAI-compatible LLM gateways."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aione-probe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
