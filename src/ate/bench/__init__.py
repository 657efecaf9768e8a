"""Benchmarks: the evidence pipeline (`ate.bench.pipeline`), its summaries and sweeps. `steer_choice(policy)`
gives the committed steer choice of a policy family (`ate.bench.choice`; read when called)."""

from ate.bench.choice import steer_choice

__all__ = ["steer_choice"]
