"""Model authenticity: per-observation features, two-sample tests, profiles and verdicts."""

from aione_probe.fingerprint.audit import AuditResult, MinSamples, compare, compare_profiles
from aione_probe.fingerprint.profile import ProbeSummary, Profile, Provenance
from aione_probe.fingerprint.verdict import SignalResult, Verdict, VerdictKind, decide

__all__ = [
    "AuditResult",
    "MinSamples",
    "ProbeSummary",
    "Profile",
    "Provenance",
    "SignalResult",
    "Verdict",
    "VerdictKind",
    "compare",
    "compare_profiles",
    "decide",
]
