"""The method-spec grammar: split_spec and render_spec are inverses."""

from __future__ import annotations

import pytest

from livar_bench.methods.registry import render_spec, split_spec


@pytest.mark.parametrize("spec", ["livar", "livar+ccvr", "ties[density=0.2,lam=1.0]+ccvr[epochs=3]",
                                  "livar[rule=/tmp/Rule.json]"])
def test_render_inverts_split(spec):
    assert render_spec(split_spec(spec)) == spec


def test_render_then_split_keeps_every_value():
    parts = [("ties", {"density": "0.2", "lam": "1.0"}), ("ccvr", {})]
    assert split_spec(render_spec(parts)) == parts
