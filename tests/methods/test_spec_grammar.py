"""MethodSpec: parsed once, canonical, and rendering is the inverse of parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.errors import BenchError
from livar_bench.methods import MethodSpec, canonical_spec
from livar_bench.methods.livar_rule import PAPER_RULE


@pytest.mark.parametrize("spec", ["livar", "livar+ccvr", "ties[density=0.2,lam=1.0]+ccvr[epochs=3]",
                                  "fedavg+ccvr", "livar[head=false]"])
def test_canonical_strings_render_as_themselves(spec: str) -> None:
    assert str(MethodSpec.parse(spec)) == spec


@pytest.mark.parametrize(("written", "canonical"), [
    ("ccvr", "fedavg+ccvr"),  # a bare stage means the implied aggregator followed by it
    ("LIVAR[HEAD_SUBSET=correct]", "livar"),  # defaults dropped, names and keys case-insensitive
    ("ties[lam=1, density=0.5]", "ties[density=0.5,lam=1.0]"),  # keys sorted, values typed
    (" livar + ccvr[model=POOLED_DIAG] ", "livar+ccvr[model=pooled_diag]"),
    ("ccvr[preset=paper,model=pooled_full]", "fedavg+ccvr[preset=paper]"),  # the preset's own value: dropped
])
def test_canonical_form(written: str, canonical: str) -> None:
    assert canonical_spec(written) == canonical


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def specs(draw: st.DrawFn) -> str:
    ties = {"density": draw(st.floats(0, 1)), "lam": draw(finite), "sign_election": draw(st.booleans()),
            "reduce": draw(st.sampled_from(["mean", "sum"]))}
    head = draw(st.sampled_from([
        f"ties[{','.join(f'{k}={v}' for k, v in ties.items() if draw(st.booleans()))}]",
        f"livar[head={draw(st.booleans())},head_subset={draw(st.sampled_from(['correct', 'all']))}]",
        f"fedprox[mu={draw(st.floats(0, 10))}]", "fedavg", "task_arithmetic"]))
    stage = draw(st.sampled_from(["", "+ccvr", f"+ccvr[epochs={draw(st.integers(1, 9))},model=pooled_diag]"]))
    return (head + stage).replace("[]", "")


@settings(max_examples=60, deadline=None)
@given(specs())
def test_parse_render_roundtrip(text: str) -> None:
    spec = MethodSpec.parse(text)
    again = MethodSpec.parse(str(spec))
    assert again == spec
    assert str(again) == str(spec)


def test_any_file_path_works_as_a_value(tmp_path) -> None:
    folder = tmp_path / "My Rules+[v1], final"
    folder.mkdir()
    rule = folder / "Rule=1.json"
    rule.write_text(json.dumps(PAPER_RULE.to_json()))
    spec = MethodSpec.parse("livar+ccvr").with_param("livar", "rule", str(rule))
    text = str(spec)
    assert text == f"livar[rule={json.dumps(str(rule))}]+ccvr"
    back = MethodSpec.parse(text)
    assert back == spec and back.build().aggregator.rule == str(rule)


def test_with_param_validates_and_canonicalises() -> None:
    spec = MethodSpec.parse("ties+ccvr")
    assert str(spec.with_param("ccvr", "epochs", "3")) == "ties+ccvr[epochs=3]"
    assert str(spec.with_param("ties", "density", "0.3")) == "ties+ccvr"  # the default: dropped
    with pytest.raises(BenchError, match="ties has no hyperparameter 'dens'; valid: density"):
        spec.with_param("ties", "dens", "0.1")
    with pytest.raises(BenchError, match="'livar' is not part of method"):
        spec.with_param("livar", "head", "true")


@pytest.mark.parametrize(("text", "message"), [
    ("livar[", "'\\[' is never closed"),
    ("livar++ccvr", "expected a method name at position 7"),
    ("+ccvr", "expected a method name at position 1"),
    ("", "empty method spec"),
    ("livar[head]", "expected key=value inside livar"),
    ("livar[head=true,head=false]", "livar.head is given twice"),
    ("livar]", "unexpected '\\]'"),
    ("ties[lam=1+2]", "inside a value"),
    ('livar[rule="/tmp/x]', "unterminated quoted value"),
    ("ccvr+livar", "can only come first"),
    ("ties+fedavg", "can only come first"),
    ("fedavgg", "unknown method 'fedavgg'. Did you mean fedavg"),
    ("ties[density=2]", "ties.density: cannot use '2': expected a number in \\[0, 1\\]. density: fraction"),
    ("ties[lam=inf]", "ties.lam: cannot use 'inf': expected a finite number. lam: scale of the merged"),
    ("ties[sign_election=maybe]", "ties.sign_election: cannot use 'maybe': expected one of true, false"),
    ("ccvr[model=half]", "ccvr.model: cannot use 'half': expected one of pooled_full, pooled_diag, client_diag, or none"),
    ("ccvr[epochs=3.5]", "ccvr.epochs: cannot use '3.5': expected an integer in \\[1, inf\\), or none"),
    ("ccvr[epochs=0]", "ccvr.epochs: cannot use '0'"),
    ("ties[lam=none]", "ties.lam: cannot use 'none'"),  # none only for optional settings

])
def test_malformed_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        MethodSpec.parse(text)


def test_components_and_files_are_built_once(tmp_path, monkeypatch) -> None:
    import livar_bench.methods.livar as livar_module

    rule = tmp_path / "r.json"
    rule.write_text(json.dumps(PAPER_RULE.to_json()))
    reads = []
    original = livar_module.load_rule
    monkeypatch.setattr(livar_module, "load_rule", lambda p: reads.append(p) or original(p))
    from livar_bench.config import make_spec

    spec = make_spec({"method": f"livar[rule={rule}]+ccvr", "rounds": 3})
    for _ in range(5):
        _ = spec.run_id
        spec.method_spec.build()
    assert len(reads) == 1
