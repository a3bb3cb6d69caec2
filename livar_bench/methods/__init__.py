"""Aggregation methods and server stages. Each import + ``register`` line below is one registry entry.

To add a method: write a frozen dataclass subclassing ``Aggregator`` in its own file (see fedavg.py, or
fedavgm.py for one with server state), then add one import and one ``register`` line here.
"""

from livar_bench.methods.base import Aggregator, Method, Stage
from livar_bench.methods.ccvr import CCVR
from livar_bench.methods.clip import ClipUpdate
from livar_bench.methods.fedadagrad import FedAdagrad
from livar_bench.methods.fedadam import FedAdam
from livar_bench.methods.fedavg import FedAvg
from livar_bench.methods.fedavgm import FedAvgM
from livar_bench.methods.fedex_lora import FedExLora
from livar_bench.methods.fedprox import FedProx
from livar_bench.methods.fedsa_lora import FedSALora
from livar_bench.methods.fedyogi import FedYogi
from livar_bench.methods.ffa_lora import FFALora
from livar_bench.methods.flora import FLoRA
from livar_bench.methods.livar import Livar
from livar_bench.methods.livar_exact import LivarExact
from livar_bench.methods.merge import TaskArithmetic, TaskVectorMerge
from livar_bench.methods.registry import entries, get_entry, register
from livar_bench.methods.spec import MethodSpec, canonical_spec, display_name, parse_method, table_order
from livar_bench.types import ClassStats, ClientUpdate, Params, RoundContext, ServerState, Signal

register("fedavg", kind="method", paper="https://arxiv.org/abs/1602.05629", label="FedAvg", order=0,
         summary="Sample-weighted mean of LoRA factors (A, B separately) and head.")(FedAvg)
register("fedprox", kind="method", paper="https://arxiv.org/abs/1812.06127", label="FedProx", order=10,
         summary="FedAvg server; clients add the proximal term mu/2 ||w - w_global||^2.")(FedProx)
register("fedavgm", kind="method", paper="https://arxiv.org/abs/1909.06335", label="FedAvgM", order=12,
         summary="FedAvg with server momentum: x + eta * m, m = momentum * m + (FedAvg - x).")(FedAvgM)
register("fedadagrad", kind="method", paper="https://arxiv.org/abs/2003.00295", label="FedAdagrad", order=14,
         summary="Adagrad server optimiser on the FedAvg pseudo-gradient (Reddi et al.).")(FedAdagrad)
register("fedadam", kind="method", paper="https://arxiv.org/abs/2003.00295", label="FedAdam", order=16,
         summary="Adam server optimiser on the FedAvg pseudo-gradient (Reddi et al.).")(FedAdam)
register("fedyogi", kind="method", paper="https://arxiv.org/abs/2003.00295", label="FedYogi", order=18,
         summary="Yogi server optimiser on the FedAvg pseudo-gradient (Reddi et al.).")(FedYogi)
register("task_arithmetic", kind="method", paper="https://arxiv.org/abs/2212.04089", label="Task arithmetic",
         order=30, summary="Task arithmetic: global + lam * mean (or sum) of client task vectors.")(TaskArithmetic)
register("ties", kind="method", paper="https://arxiv.org/abs/2306.01708", label="TIES", order=40,
         summary="TIES-merging of client task vectors: trim, elect sign, disjoint mean, scale by lam.")(TaskVectorMerge)
register("fedex_lora", kind="method", paper="https://arxiv.org/abs/2410.09432", label="FedEx-LoRA", order=70,
         summary="FedAvg of A, B plus the exact-aggregation residual folded into the base weights.")(FedExLora)
register("flora", kind="method", paper="https://arxiv.org/abs/2409.05976", label="FLoRA", order=72,
         summary="Stacking: exact weighted product folded into the base weights; fresh adapters each round.")(FLoRA)
register("ffa_lora", kind="method", paper="https://arxiv.org/abs/2403.12313", label="FFA-LoRA", order=74,
         summary="A frozen at its seeded initialisation; FedAvg of B and head.")(FFALora)
register("fedsa_lora", kind="method", paper="https://arxiv.org/abs/2410.01463", label="FedSA-LoRA", order=76,
         summary="A and head shared (FedAvg); each client keeps its own B (personalised).")(FedSALora)
register("livar", kind="method", paper="https://arxiv.org/abs/2507.06813", label="LIVAR", order=100,
         summary="Variance-weighted head per class; LoRA factors weighted by intrinsic training signals.")(Livar)
register("livar_exact", kind="method", paper="https://arxiv.org/abs/2507.06813", label="LIVAR-Exact (ours)",
         order=110, summary="This project's variant: LIVAR's signal weights on the LoRA products, with "
         "FedEx-LoRA's residual in the base weights.")(LivarExact)
register("ccvr", kind="stage", paper="https://arxiv.org/abs/2106.05001", label="CCVR", order=50,
         summary="Retrain the head on virtual features drawn from per-class Gaussians of client feature statistics.")(CCVR)
register("clip", kind="stage", paper="https://arxiv.org/abs/1710.06963", label="Clip", order=60,
         summary="Scale the round's global update to an L2 norm of at most max_norm.")(ClipUpdate)

__all__ = [
    "Aggregator", "CCVR", "ClipUpdate", "ClassStats", "ClientUpdate", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedExLora", "FedProx", "FedSALora", "FFALora", "FLoRA",
    "FedYogi", "Livar", "LivarExact", "Method", "MethodSpec",
    "Params", "RoundContext", "ServerState", "Signal", "Stage", "TaskArithmetic", "TaskVectorMerge",
    "canonical_spec", "display_name", "entries", "get_entry", "parse_method", "register", "table_order",
]
