"""Aggregation methods and server stages. Each import + ``register`` line below is one registry entry.

To add a method: write a frozen dataclass in its own file (see fedavg.py), then add one line here.
"""

from livar_bench.methods.base import (
    Aggregator,
    ClassStats,
    ClientUpdate,
    CrossEntropy,
    LocalObjective,
    Method,
    Params,
    RoundContext,
    Signal,
    Stage,
)
from livar_bench.methods.fedavg import FedAvg
from livar_bench.methods.registry import canonical_spec, entries, get_entry, parse_method, register

register("fedavg", kind="method", paper="https://arxiv.org/abs/1602.05629",
         summary="Sample-weighted mean of LoRA factors (A, B separately) and head.")(FedAvg)

__all__ = [
    "Aggregator", "ClassStats", "ClientUpdate", "CrossEntropy", "LocalObjective", "Method", "Params",
    "RoundContext", "Signal", "Stage", "FedAvg", "canonical_spec", "entries", "get_entry", "parse_method",
    "register",
]
