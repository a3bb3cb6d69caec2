"""Options that reproduce the authors' code, each against that code's rule written out here (issue 24).

The rules below restate what the authors' released code computes (read from it; no code copied), on plain
tensors, without the project's helpers.
"""

from __future__ import annotations

import pytest
import torch

from livar_bench.methods import ClientUpdate, RoundContext, parse_method

SCALE = 0.5


def square_clients(seed: int = 0, k: int = 3) -> tuple[dict, list[ClientUpdate]]:
    """One square LoRA module (3x3, rank 2; a square layer is where a transposed residual goes unnoticed),
    a head of 2 classes, clients with unequal sample counts 1, 4, 10."""
    g = torch.Generator().manual_seed(seed)

    def params() -> dict:
        return {"m.lora_A": torch.randn(2, 3, generator=g), "m.lora_B": torch.randn(3, 2, generator=g),
                "head.weight": torch.randn(2, 4, generator=g), "head.bias": torch.randn(2, generator=g)}

    glob = params()
    ups = [ClientUpdate(i, n, torch.tensor([n, 0]), params()) for i, n in enumerate([1, 4, 10][:k])]
    return glob, ups


def ctx(round_: int = 1) -> RoundContext:
    return RoundContext(round_, 3, 2, SCALE, torch.Generator().manual_seed(round_))


def test_fedex_lora_uniform_is_the_authors_aggregate_models_ours() -> None:
    """fed_agg.py ``aggregate_models_ours``: classifier, A and B are plain means over the K clients; per module
    M = (1/K) sum_k B_k A_k, residue = M - mean(B) mean(A), and the base weight gains scaling * residue
    (alpha / r; the code adds it transposed, which for nn.Linear is wrong: this project does not)."""
    glob, ups = square_clients()
    k = len(ups)
    mean_a = sum(u.params["m.lora_A"] for u in ups) / k
    mean_b = sum(u.params["m.lora_B"] for u in ups) / k
    m = sum(u.params["m.lora_B"] @ u.params["m.lora_A"] for u in ups) / k
    residue = SCALE * (m - mean_b @ mean_a)

    method = parse_method("fedex_lora[weights=uniform]")
    state = method.server_step(method.init_state(glob), ups, ctx())
    torch.testing.assert_close(state.params["m.lora_A"], mean_a)
    torch.testing.assert_close(state.params["m.lora_B"], mean_b)
    for key in ("head.weight", "head.bias"):
        torch.testing.assert_close(state.params[key], sum(u.params[key] for u in ups) / k)
    torch.testing.assert_close(state.base_deltas["m"], residue)
    assert not torch.allclose(state.base_deltas["m"], residue.T, atol=1e-3)  # not the authors' transpose
    # the global model then equals the plain mean of the client models exactly
    torch.testing.assert_close(state.base_deltas["m"] + SCALE * mean_b @ mean_a, SCALE * m)

    default = parse_method("fedex_lora")  # samples: differs, as the clients' counts differ
    other = default.server_step(default.init_state(glob), ups, ctx())
    assert not torch.allclose(other.params["m.lora_A"], mean_a, atol=1e-3)


def test_ffa_lora_uniform_is_the_public_baselines_plain_mean() -> None:
    """fed_agg.py ``aggregate_models_ffa`` (FedEx-LoRA's baseline): lora_B and the classifier are plain
    means; A is not aggregated (frozen, the same on every client)."""
    glob, ups = square_clients()
    ups = [ClientUpdate(u.client_id, u.num_samples, u.class_counts, {**u.params, "m.lora_A": glob["m.lora_A"]})
           for u in ups]
    method = parse_method("ffa_lora[weights=uniform]")
    state = method.server_step(method.init_state(glob), ups, ctx())
    for key in ("m.lora_B", "head.weight", "head.bias"):
        torch.testing.assert_close(state.params[key], sum(u.params[key] for u in ups) / len(ups))
    assert torch.equal(state.params["m.lora_A"], glob["m.lora_A"])
    assert method.aggregator.secure_weight(ups[2]) == 1.0  # under secure aggregation too
    assert parse_method("ffa_lora").aggregator.secure_weight(ups[2]) == 10.0


@pytest.mark.parametrize("spec", ["fedex_lora[weights=uniform]", "ffa_lora[weights=uniform]"])
def test_uniform_with_equal_clients_equals_samples(spec: str) -> None:
    glob, ups = square_clients()
    ups = [ClientUpdate(u.client_id, 5, u.class_counts, u.params) for u in ups]
    a, b = parse_method(spec), parse_method(spec.split("[")[0])
    sa = a.server_step(a.init_state(glob), ups, ctx())
    sb = b.server_step(b.init_state(glob), ups, ctx())
    for key in glob:
        torch.testing.assert_close(sa.params[key], sb.params[key])


# (method, option, a word its help must contain): the options issue 24 added, as `ls methods` lists them
NEW_OPTIONS = [("fedex_lora", "weights", "uniform"), ("ffa_lora", "weights", "uniform"), ("fedsa_lora", "head", "local"),
               ("fedsa_lora", "first_start", "initial"), ("flora", "a_init", "per_client")]


def test_ls_methods_json_shows_the_new_options_with_their_help(monkeypatch, capsys) -> None:
    import json

    from tests._cli import invoke

    code, out, err = invoke(["ls", "methods", "--format", "json"], monkeypatch, capsys)
    assert code == 0, err
    listed = {m["name"]: {h["name"]: h for h in m["hyperparameters"]} for m in json.loads(out)}
    for method, option, word in NEW_OPTIONS:
        entry = listed[method][option]
        assert word in entry["help"] and entry["default"] is not None, (method, option, entry)


def test_fedsa_lora_local_head_is_the_authors_glue_configuration() -> None:
    """FedSA-LoRA's GLUE config: ``local_param: ['lora_B', 'classifier']``: every client keeps its own B and
    classifier; the rest (A) is the sample-size-weighted mean (FederatedScope's default aggregator)."""
    glob, ups = square_clients()
    method = parse_method("fedsa_lora[head=local]")
    state = method.server_step(method.init_state(glob), ups, ctx())
    n = torch.tensor([u.num_samples for u in ups], dtype=torch.float32)
    mean_a = sum(w * u.params["m.lora_A"] for w, u in zip(n / n.sum(), ups, strict=True))
    for u in ups:
        start = method.client_start(state, u.client_id)
        torch.testing.assert_close(start["m.lora_A"], mean_a)
        for key in ("m.lora_B", "head.weight", "head.bias"):  # its own, as it trained them
            assert torch.equal(start[key], u.params[key]), key
        personal = method.personal_params(state, u)  # --eval-local: own B and head, global A
        assert torch.equal(personal["head.weight"], u.params["head.weight"])
    shared = parse_method("fedsa_lora")  # the default shares the head
    start = shared.client_start(shared.server_step(shared.init_state(glob), ups, ctx()), 0)
    assert not torch.equal(start["head.weight"], ups[0].params["head.weight"])
    assert torch.equal(start["m.lora_B"], ups[0].params["m.lora_B"])


@pytest.mark.parametrize("spec", ["fedsa_lora[first_start=initial]", "fedsa_lora[first_start=initial,head=local]"])
def test_fedsa_lora_first_start_initial_is_the_papers_local_b(spec: str) -> None:
    """B never leaves its client, so a client that first trains in round 2 starts from its initial B (and
    head, when local), not from the FedAvg of the other clients' (the default, first_start=global)."""
    glob, ups = square_clients()
    method = parse_method(spec)
    state = method.server_step(method.init_state(glob), ups[:2], ctx())  # client 2 sits out round 1
    late = method.client_start(state, 2)
    personal = ("m.lora_B", "head.weight", "head.bias") if "head=local" in spec else ("m.lora_B",)
    for key in personal:
        assert torch.equal(late[key], glob[key]), key
    for u in ups[:2]:  # clients seen in round 1 keep their own
        assert torch.equal(method.client_start(state, u.client_id)["m.lora_B"], u.params["m.lora_B"])
    default = parse_method("fedsa_lora")
    d_state = default.server_step(default.init_state(glob), ups[:2], ctx())
    n = torch.tensor([1.0, 4.0])
    fedavg_b = (n[0] * ups[0].params["m.lora_B"] + n[1] * ups[1].params["m.lora_B"]) / n.sum()
    torch.testing.assert_close(default.client_start(d_state, 2)["m.lora_B"], fedavg_b)
    again = method.server_step(state, ups[:2], ctx(2))  # the initial tensors stay those of round 1
    assert torch.equal(method.client_start(again, 2)["m.lora_B"], glob["m.lora_B"])


def test_flora_per_client_a_is_the_authors_fresh_adapter_per_client() -> None:
    """FLoRA's code wraps the merged model in a new PEFT adapter on every client every round: each client's
    A is its own kaiming-uniform draw, U(-1/sqrt(in), 1/sqrt(in)), B = 0; so the stacked update
    sum_k p_k B_k A_k can reach rank K r, where one shared A keeps it at rank r."""
    glob, ups = square_clients()
    method = parse_method("flora[a_init=per_client]")
    state0 = method.init_state(glob)
    assert all(method.client_start(state0, k) is state0.params for k in range(3))  # round 1: the shared init
    state = method.server_step(state0, ups, ctx())
    starts = [method.client_start(state, k) for k in range(3)]
    bound = 1 / 3 ** 0.5  # in = 3
    for k, start in enumerate(starts):
        a = start["m.lora_A"]
        assert a.shape == (2, 3) and bool((a.abs() <= bound).all()) and bool((start["m.lora_B"] == 0).all())
        assert torch.equal(a, method.client_start(state, k)["m.lora_A"])  # the same draw every time it is asked
    for j in range(3):
        for k in range(j + 1, 3):
            assert not torch.allclose(starts[j]["m.lora_A"], starts[k]["m.lora_A"])  # independent per client
    # the stack of clients that each trained B on their own A: rank min(K r, 3) = 3; shared A: rank r = 2
    g = torch.Generator().manual_seed(5)
    b = [torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(3)]
    p = torch.tensor([1.0, 4.0, 10.0], dtype=torch.float64) / 15
    stacked = sum(p[k] * b[k] @ starts[k]["m.lora_A"].double() for k in range(3))
    shared = parse_method("flora")
    s_state = shared.server_step(shared.init_state(glob), ups, ctx())
    same_a = shared.client_start(s_state, 0)["m.lora_A"]
    assert all(torch.equal(shared.client_start(s_state, k)["m.lora_A"], same_a) for k in range(3))
    one = sum(p[k] * b[k] @ same_a.double() for k in range(3))
    assert int(torch.linalg.matrix_rank(stacked)) == 3 and int(torch.linalg.matrix_rank(one)) == 2


def test_flora_per_client_runs_and_resumes_to_the_same_numbers(tmp_path, tiny_spec_values) -> None:
    import pandas as pd

    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    class Stop(BaseException):
        pass

    def stop_after_round_2(event, **info):
        if event == "round" and info["round"] == 2:
            raise Stop

    spec = make_spec({**tiny_spec_values, "method": "flora[a_init=per_client]", "rounds": 3})
    first = pd.read_csv(run_federation(spec, tmp_path / "a").run_dir / "metrics.csv")
    with pytest.raises(Stop):  # interrupted after round 2's checkpoint: the seed of round 3's A's is in it
        run_federation(spec, tmp_path / "b", on_event=stop_after_round_2)
    again = pd.read_csv(run_federation(spec, tmp_path / "b").run_dir / "metrics.csv")
    test = lambda f: f[f["split"] == "test"][["round", "metric", "value"]].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(test(first), test(again))
    shared = pd.read_csv(run_federation(spec.replace(method="flora"), tmp_path / "c").run_dir / "metrics.csv")
    assert not test(first).equals(test(shared))  # rounds 2 and 3 start from other A's
