"""Leave-domains-out: the held-out domains leave training and the pooled test set for test_heldout."""

from __future__ import annotations

import pytest
import torch

from livar_bench.data import load_dataset
from livar_bench.data.domains import hold_out
from livar_bench.errors import BenchError
from tests.data.test_data import _options
from tests.data.test_domains import write_domainnet


def test_hold_out_moves_a_domain_out_of_training_into_test_heldout(tmp_path):
    write_domainnet(tmp_path / "data")
    bundle = load_dataset("domainnet", _options(tmp_path / "data", tmp_path / "cache"))
    left = hold_out(bundle, ("sketch",))
    sketch = bundle.domain_names.index("sketch")
    assert len(left.train) == 44 and sketch not in left.train.domains.tolist()
    assert len(left.test) == 22 and sketch not in left.test.domains.tolist()
    assert len(left.heldout_test) == 11 and set(left.heldout_test.domains.tolist()) == {sketch}
    assert left.heldout_domains == ("sketch",)
    kept = torch.nonzero(bundle.train.domains != sketch).flatten()
    assert torch.equal(left.train.images, bundle.train.images[kept])
    with pytest.raises(BenchError, match="no such domain; its domains: clipart, real, sketch"):
        hold_out(bundle, ("quickdraw",))
    with pytest.raises(BenchError, match="every domain"):
        hold_out(bundle, ("clipart", "real", "sketch"))
    with pytest.raises(BenchError, match="needs a dataset with domains"):
        hold_out(load_dataset("digits"), ("sketch",))




def test_a_run_evaluates_the_held_out_domain_next_to_the_pooled_test_set(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from tests._cli import invoke

    write_domainnet(tmp_path / "data")
    out = tmp_path / "results"
    args = ["run", "--dataset", "domainnet", "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "c"),
            "--image-size", "16", "--heldout-domains", "sketch", "--partition", "domain", "--clients", "2",
            "--min-client-samples", "2", "--backbone", "livar_micro_vit", "--rounds", "2", "--epochs", "1",
            "--lora-rank", "2", "--device", "cpu", "--out", str(out)]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert code == 0, err
    run = next((out / "runs").glob("*/DONE")).parent
    frame = pd.read_csv(run / "metrics.csv")
    held = frame[frame["split"] == "test_heldout"]
    assert sorted(held["round"].unique()) == [0, 1, 2] and set(held["metric"]) == {"acc", "loss"}
    assert not frame[frame["split"] == "test"].empty
    import json

    record = json.loads((run / "partition.json").read_text())
    # two clients, the two training domains (clipart, real) one each; no sketch image is trained on
    assert record["domain_names"] == ["clipart", "real", "sketch"]
    assert record["domain_counts"] == [[22, 0, 0], [0, 22, 0]]
    code, _, err = invoke([*args[:-2], "--heldout-domains", "quickdraw", "--out", str(tmp_path / "other")],
                          monkeypatch, capsys)
    assert code == 2 and "no such domain; its domains: clipart, real, sketch" in err
    assert not (tmp_path / "other").exists()
