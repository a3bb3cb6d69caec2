"""Run ids pinned: refactoring must not change the id of any existing experiment.

The ids below were computed on main at 1058ae5 (before the package split of issue 18). A run id is the
key under which a results folder skips finished work, so a changed id silently reruns (or worse, a reused
one silently mixes) experiments. An intended change of ids goes into CHANGELOG.md and into this table in
the same commit.
"""

from __future__ import annotations

import pytest

from livar_bench.config import make_spec
from tests._shared import DINOV2_WEIGHTS as WEIGHTS

PINNED = [
    ({"method": "fedavg"}, "14f687d1809f"),
    ({"method": "fedprox"}, "27ce6ec8bd1b"),
    ({"method": "fedavgm"}, "46e0df217f58"),
    ({"method": "fedadagrad"}, "8cf5d94f6107"),
    ({"method": "fedadam"}, "b35af0283fa5"),
    ({"method": "fedyogi"}, "23255ea95695"),
    ({"method": "task_arithmetic"}, "cf7a1364b205"),
    ({"method": "ties"}, "e085be57a516"),
    ({"method": "fedex_lora"}, "0194963c6415"),
    ({"method": "flora"}, "5603954b6506"),
    ({"method": "ffa_lora"}, "f14849e9324a"),
    ({"method": "fedsa_lora"}, "2117f7f3df62"),
    ({"method": "livar"}, "95b0c49333e6"),
    ({"method": "livar_exact"}, "250881dc2842"),
    ({"method": "ccvr"}, "b6c5f97e8a47"),
    ({"method": "clip"}, "4b86bd3d3e66"),
    ({"method": "livar+ccvr"}, "36648ac580c7"),
    ({"method": "ties+ccvr"}, "9ab9758c0fe3"),
    ({"method": "fedadam+ccvr"}, "5ed85bbcc83f"),
    ({"method": "livar+ccvr+clip"}, "7ceaeae818f0"),
    ({"method": "ccvr[preset=paper]"}, "0398dce4590e"),
    ({"method": "ties[density=0.2,lam=1.0]"}, "d7a3c9de4632"),
    ({"method": "fedavg[space=product]"}, "3eb9324943bb"),
    ({"method": "ties[space=product]"}, "0b0b6d5a0f6f"),
    ({"method": "task_arithmetic[space=product]"}, "7a4f96b10c6a"),
    ({"method": "flora", "client_ranks": [4, 8, 16]}, "6c376fd64a89"),
    ({"method": "fedavg[space=product]", "client_ranks": [2, 4]}, "efe9fc4baafc"),
    ({"method": "fedavg", "partition": "iid"}, "11e8a6ffa55c"),
    ({"method": "livar", "alpha": 0.1, "seed": 3, "num_clients": 5}, "7c129c9e5986"),
    ({"method": "fedsa_lora", "eval_local": True}, "fb7e043fa21c"),
    ({"method": "fedavg", "val_fraction": 0.1, "participation": 0.5}, "5b4bd12ca6a1"),
]

PINNED_REAL = [
    ({"method": "fedavg", "image_size": 42}, "9d39d575f443"),
    ({"method": "livar+ccvr", "image_size": 56}, "a59b7eb08862"),
]


@pytest.mark.parametrize(("settings", "run_id"), PINNED, ids=[str(s) for s, _ in PINNED])
def test_run_id_is_pinned(settings: dict, run_id: str) -> None:
    assert make_spec(settings).run_id == run_id


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"real DINOv2 weights not found at {WEIGHTS} (../shared absent)")
@pytest.mark.parametrize(("settings", "run_id"), PINNED_REAL, ids=[str(s) for s, _ in PINNED_REAL])
def test_real_weights_run_id_is_pinned(settings: dict, run_id: str) -> None:
    # The weights enter the id by content (sha256), not by path: any copy of the file gives these ids.
    spec = make_spec({**settings, "dataset": "digits", "backbone": "vit_small_patch14_dinov2", "weights": str(WEIGHTS)})
    assert spec.run_id == run_id
