"""A round whose new global model is not finite fails with one line saying whose fault it is (issue 26).

Before, ``fedavgm[eta=1e308]`` finished with exit 0 and chance accuracy: the server step made the global
LoRA factors inf/NaN and the run evaluated them anyway.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.errors import DivergedError
from livar_bench.federation import run_federation
from livar_bench.store import RunStore
from tests._cli import QUICK, assert_user_error, invoke


@pytest.mark.parametrize("method", ["fedavgm[eta=1e308]", "fedadam[eta=1e308]", "ties[lam=1e308]"])
def test_server_step_that_overflows_fails_the_round(tmp_path, tiny_spec_values, method) -> None:
    spec = make_spec({**tiny_spec_values, "method": method, "rounds": 1})
    with pytest.raises(DivergedError, match=r"round 1: the new global model is not finite .*server step of "
                       + method.split("[")[0] + r".*lower the method's step size"):
        run_federation(spec, tmp_path)
    assert not RunStore(tmp_path).is_done(spec.run_id)
    assert not (tmp_path / "runs" / ".partial" / spec.run_id).exists()  # nothing of round 1 was kept


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    code, _, err = invoke(["run", *QUICK, "--clients", "2", "--rounds", "1", "--method", "fedavgm[eta=1e308]",
                           "--out", str(tmp_path)], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "server step of fedavgm", "eta")


def test_a_client_with_nonfinite_tensors_is_named(tmp_path, tiny_spec_values, monkeypatch) -> None:
    # a client whose tensors end non-finite with a finite loss (e.g. a NaN gradient in its last step)
    from livar_bench.federation import local_engine

    original = local_engine.train_round_clients

    def one_nan(*args, **kwargs):
        results = original(*args, **kwargs)
        r = results[1]
        params = {**r.update.params, "blocks.0.mlp.fc1.lora_B": torch.full_like(
            r.update.params["blocks.0.mlp.fc1.lora_B"], float("nan"))}
        return {**results, 1: dataclasses.replace(r, update=dataclasses.replace(r.update, params=params))}

    monkeypatch.setattr(local_engine, "train_round_clients", one_nan)
    spec = make_spec({**tiny_spec_values, "method": "fedavg", "rounds": 1})
    with pytest.raises(DivergedError, match=r"round 1: .*e\.g\. blocks\.0\.mlp\.fc1\.lora_B\): the trained "
                       r"tensors of client\(s\) 1 are not finite although their loss is; lower --lr"):
        run_federation(spec, tmp_path)


def test_finite_runs_are_untouched(tmp_path, tiny_spec_values) -> None:
    # a large but finite server step still runs (the user asked for it) and so does an ordinary one
    for method in ("fedavgm[eta=1e3]", "fedavg"):
        outcome = run_federation(make_spec({**tiny_spec_values, "method": method, "rounds": 1}), tmp_path)
        assert RunStore(tmp_path).is_done(outcome.run_id)
