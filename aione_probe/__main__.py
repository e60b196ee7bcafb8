"""``python -m aione_probe`` runs the command line."""

import sys

from aione_probe.cli import main

sys.exit(main())
