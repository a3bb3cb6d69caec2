"""Leave-domains-out: the held-out domains leave training and the pooled test set for test_heldout."""

from __future__ import annotations

import pytest
import torch

from livar_bench.data import load_dataset
from livar_bench.data.domains import hold_out
from livar_bench.errors import BenchError
from tests.data.test_domains import write_domainnet
from tests.test_data import _options


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


