"""Analysis: every verdict (authenticity, drift, cross-protocol) derived from the store.

One home for the statistics: `stats` holds the two-sample tests, p-value combination and
multiplicity corrections, `sequential` the anytime-valid machinery (e-values, e-CUSUM), and
`run` the analysis pass the service and the CLI call. Modules here are imported by their
full name (``from aione_probe.analysis.run import analyse``); this file imports nothing so
that `aione_probe.fingerprint` can use `stats` without an import cycle.
"""
