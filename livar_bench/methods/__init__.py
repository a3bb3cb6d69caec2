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
from livar_bench.methods.ccvr import CCVR
from livar_bench.methods.fedavg import FedAvg
from livar_bench.methods.fedprox import FedProx
from livar_bench.methods.livar import Livar
from livar_bench.methods.merge import TaskArithmetic, TaskVectorMerge
from livar_bench.methods.registry import canonical_spec, entries, get_entry, parse_method, register

register("fedavg", kind="method", paper="https://arxiv.org/abs/1602.05629",
         summary="Sample-weighted mean of LoRA factors (A, B separately) and head.")(FedAvg)
register("fedprox", kind="method", paper="https://arxiv.org/abs/1812.06127",
         summary="FedAvg server; clients add the proximal term mu/2 ||w - w_global||^2.")(FedProx)
register("livar", kind="method", paper="https://arxiv.org/abs/2507.06813",
         summary="Variance-weighted head per class; LoRA factors weighted by intrinsic training signals.")(Livar)
register("ties", kind="method", paper="https://arxiv.org/abs/2306.01708",
         summary="TIES-merging of client task vectors: trim, elect sign, disjoint mean, scale by lam.")(TaskVectorMerge)
register("task_arithmetic", kind="method", paper="https://arxiv.org/abs/2212.04089",
         summary="Task arithmetic: global + lam * mean (or sum) of client task vectors.")(TaskArithmetic)
register("ccvr", kind="stage", paper="https://arxiv.org/abs/2106.05001",
         summary="Retrain the head on virtual features sampled from pooled per-class Gaussians.")(CCVR)

__all__ = [
    "Aggregator", "ClassStats", "ClientUpdate", "CrossEntropy", "LocalObjective", "Method", "Params",
    "RoundContext", "Signal", "Stage", "CCVR", "FedAvg", "FedProx", "Livar", "TaskArithmetic", "TaskVectorMerge", "canonical_spec", "entries", "get_entry", "parse_method",
    "register",
]
