"""Aggregation methods and server stages. Each ``register`` line below is one registry entry.

To add a method: write a class subclassing ``Aggregator`` in its own file, described with ``@describe``
(its paper, label, summary, table position; its hyperparameters as fields with types, ranges and help;
see fedavg.py, or fedavgm.py for one with server state), then add one import and one ``register`` line
here. ``register(cls, name=..., defaults={...})`` registers the same class again as a preset under its
own name.
"""

from livar_bench.methods.base import Aggregator, Method, Stage
from livar_bench.methods.ccvr import CCVR
from livar_bench.methods.clip import ClipUpdate
from livar_bench.methods.dare import Dare, DareTies
from livar_bench.methods.describe import describe
from livar_bench.methods.dp import DP
from livar_bench.methods.fedadagrad import FedAdagrad
from livar_bench.methods.fedadam import FedAdam
from livar_bench.methods.fedams import FedAMS
from livar_bench.methods.fedavg import FedAvg
from livar_bench.methods.fedavgm import FedAvgM
from livar_bench.methods.fedex_lora import FedExLora
from livar_bench.methods.fednova import FedNova
from livar_bench.methods.fedprox import FedProx
from livar_bench.methods.fedsa_lora import FedSALora
from livar_bench.methods.fedyogi import FedYogi
from livar_bench.methods.ffa_lora import FFALora
from livar_bench.methods.fisher_merging import FisherMerging
from livar_bench.methods.flexlora import FlexLoRA
from livar_bench.methods.flora import FLoRA
from livar_bench.methods.hetlora import HetLoRA
from livar_bench.methods.iso_c import IsoC
from livar_bench.methods.knots import KnOTS
from livar_bench.methods.livar import Livar
from livar_bench.methods.livar_exact import LivarExact
from livar_bench.methods.lora_fair import LoraFair
from livar_bench.methods.merge import TaskArithmetic, TaskVectorMerge
from livar_bench.methods.registry import entries, get_entry, register
from livar_bench.methods.regmean import RegMean
from livar_bench.methods.rolora import RoLoRA
from livar_bench.methods.scaffold import Scaffold
from livar_bench.methods.spec import MethodSpec, canonical_spec, display_name, parse_method, table_order
from livar_bench.methods.tsv_m import TSVMerge
from livar_bench.types import ClassStats, ClientUpdate, Params, RoundContext, ServerState, Signal

register(FedAvg)
register(FedProx)
register(FedAvgM)
register(FedAdagrad)
register(FedAdam)
register(FedYogi)
register(FedNova)
register(Scaffold)
register(FedAMS)
register(FedAMS, name="fedamsgrad", label="FedAMSGrad", defaults={"vhat_init": 0.0, "eps": 1e-3},
         summary="AMSGrad server optimiser, eps added to sqrt(vhat) instead of the max stabilisation.")
register(TaskArithmetic)
register(TaskVectorMerge)
register(Dare)
register(DareTies)
register(TSVMerge)
register(IsoC)
register(KnOTS)
register(FedExLora)
register(FLoRA)
register(FFALora)
register(FedSALora)
register(RoLoRA)
register(FlexLoRA)
register(HetLoRA)
register(LoraFair)
register(RegMean)
register(FisherMerging)
register(Livar)
register(LivarExact)
register(CCVR)
register(ClipUpdate)
register(DP)

__all__ = [
    "Aggregator", "CCVR", "ClipUpdate", "DP", "ClassStats", "ClientUpdate", "Dare", "DareTies", "FlexLoRA", "HetLoRA",
    "IsoC", "KnOTS", "LoraFair", "TSVMerge", "RegMean", "FisherMerging", "RoLoRA", "Scaffold", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedExLora", "FedNova", "FedProx", "FedSALora", "FFALora", "FLoRA",
    "FedYogi", "Livar", "LivarExact", "Method", "MethodSpec",
    "Params", "RoundContext", "ServerState", "Signal", "Stage", "TaskArithmetic", "TaskVectorMerge",
    "canonical_spec", "describe", "display_name", "entries", "get_entry", "parse_method", "register", "table_order",
]
