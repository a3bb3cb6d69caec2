"""Issue 24's new options and fixes through ``--engine flower``: the same metrics as the local engine
(|difference| <= 1e-6) and the same byte counts. Per-client fresh A drawn from server state (FLoRA), the
extra client round with the new base corrections (CCVR after FedEx-LoRA), a local head and late clients
starting from their initial tensors (FedSA-LoRA under partial participation). Slow."""

from __future__ import annotations

import pytest

from livar_bench.config import make_spec
from tests.flower._equivalence import VALUES, assert_engines_agree

pytest.importorskip("flwr")
pytest.importorskip("ray")

pytestmark = pytest.mark.slow
CASES = [("flora[a_init=per_client]", {}), ("fedex_lora+ccvr[features=global]", {}),
         ("fedsa_lora[head=local,first_start=initial]", {"participation": 0.67, "rounds": 3})]


@pytest.mark.parametrize(("method", "extra"), CASES)
def test_flower_engine_matches_the_local_engine(method, extra, tmp_path) -> None:
    spec = make_spec({**VALUES, "method": method, **extra})
    assert_engines_agree(spec, tmp_path)
