"""Every partitioner: a hand-computed case (a scripted generator says what each draw returned), and
properties (each sample held at most once, and exactly once unless the scheme leaves a class out; same
seed, same partition; other seed, other partition; every setting changes the partition and its id)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.config import make_spec
from livar_bench.data.partitioners import PARTITIONERS, PartitionData, parse_partition, render
from livar_bench.errors import BenchError
from tests.data._scripted import Scripted, arr


def sets(part) -> list[list[int]]:
    return [ix.tolist() for ix in part.client_indices]


# --- hand-computed cases ---------------------------------------------------------------------------

def test_iid_cuts_the_permutation_into_near_equal_pieces():
    rng = Scripted(("permutation", arr(4, 2, 0, 3, 1)))
    part = parse_partition("iid").draw(PartitionData(np.zeros(5, np.int64)), 2, rng)
    assert sets(part) == [[0, 2, 4], [1, 3]] and rng.done()  # 5 = 3 + 2, the larger piece first


def test_dirichlet_assigns_each_sample_by_its_class_probabilities():
    labels = np.array([0, 0, 1, 1, 1])

    def choice(k, size, p):
        assert k == 2 and size in (2, 3)
        return {2: np.array([1, 0]), 3: np.array([0, 0, 1])}[size]

    def dirichlet(concentration):
        assert np.allclose(concentration, [0.3, 0.3])  # alpha * 1_K
        return arr(0.7, 0.3)

    rng = Scripted(("dirichlet", dirichlet), ("choice", choice), ("dirichlet", dirichlet), ("choice", choice))
    part = parse_partition("dirichlet[alpha=0.3]").draw(PartitionData(labels), 2, rng, min_size=1)
    # class 0 (samples 0, 1) -> clients 1, 0; class 1 (samples 2, 3, 4) -> clients 0, 0, 1
    assert sets(part) == [[1, 2, 3], [0, 4]] and rng.done()
    assert rng.calls[1][2]["p"].tolist() == [0.7, 0.3]


def test_dirichlet_redraws_the_whole_partition_below_the_minimum():
    labels = np.array([0, 0, 0])
    rng = Scripted(("dirichlet", arr(1.0, 0.0)), ("choice", np.array([0, 0, 0])),  # client 1 empty: redraw
                   ("dirichlet", arr(0.5, 0.5)), ("choice", np.array([0, 1, 0])))
    assert sets(parse_partition("dirichlet").draw(PartitionData(labels), 2, rng, min_size=1)) == [[0, 2], [1]]


def test_dirichlet_shares_cut_at_rounded_cumulative_shares_and_balance():
    labels = np.array([0] * 10 + [1] * 4)
    draws = (("dirichlet", arr(0.25, 0.5, 0.25)), ("dirichlet", arr(0.2, 0.6, 0.2)))
    # class 0: cumsum * 10 = 2.5, 7.5 -> cuts 2, 7; class 1: cumsum * 4 = 0.8, 3.2 -> cuts 0, 3
    plain = parse_partition("dirichlet[counts=shares]").draw(PartitionData(labels), 3, Scripted(*draws))
    assert sets(plain) == [[0, 1], [2, 3, 4, 5, 6, 10, 11, 12], [7, 8, 9, 13]]
    # balance: after class 0 client 1 holds 5 > 14 / 3 samples, so class 1 goes to clients 0 and 2 with
    # shares 0.5, 0.5: cuts 2, 2
    balanced = parse_partition("dirichlet[counts=shares,balance=true]").draw(PartitionData(labels), 3, Scripted(*draws))
    assert sets(balanced) == [[0, 1, 10, 11], [2, 3, 4, 5, 6], [7, 8, 9, 12, 13]]


def test_inner_dirichlet_fills_clients_from_their_priors_and_drops_exhausted_classes():
    from livar_bench.data.partitioners import inner_dirichlet

    labels = np.array([0, 0, 1, 1])
    script = [("dirichlet", np.array([[0.9, 0.1], [0.5, 0.5]])),
              ("choice", 0), ("choice", 0),  # client 0 takes class 0's last sample, index 1
              ("choice", 0), ("choice", 0),  # ... then index 0
              ("choice", 0), ("choice", 0),  # class 0 is exhausted: removed from every prior
              ("choice", lambda classes, p: (np.testing.assert_allclose(p, [0, 1]), 1)[1]),  # index 3
              ("choice", 1), ("choice", 1)]  # client 1: class 1, index 2
    rng = Scripted(*script)
    part = inner_dirichlet(labels, np.array([3, 1]), 0.5, rng)
    assert sets(part) == [[0, 1, 3], [2]] and rng.done()


def test_balanced_dirichlet_gives_equal_sizes_and_an_empty_prior_falls_back_to_the_classes_left():
    labels = np.array([0, 0, 1, 1, 1])  # equal sizes of 5 over 2 clients: 3, 2
    check_fallback = ("choice", lambda classes, p: (np.testing.assert_allclose(p, [0, 1]), 1)[1])
    rng = Scripted(("dirichlet", np.array([[1.0, 0.0], [0.0, 1.0]])),
                   ("choice", 0), ("choice", 0),  # client 0, class 0: index 1
                   ("choice", 0), ("choice", 0),  # client 0, class 0: index 0
                   ("choice", 0), ("choice", 0),  # client 0, class 0 is gone: its prior has no mass left ...
                   check_fallback,  # ... so it draws from the classes left: class 1, index 4
                   ("choice", 1), ("choice", 1), ("choice", 1), ("choice", 1))  # client 1: indices 3, 2
    part = parse_partition("balanced_dirichlet").draw(PartitionData(labels), 2, rng, min_size=1)
    assert sets(part) == [[0, 1, 4], [2, 3]] and rng.done()


def test_quantity_sizes_are_the_minimum_plus_hamilton_shares():
    # lognormal weights 1, 3; N = 10, K = 2, minimum 2: 6 left, shares 1.5 and 4.5 -> floors 1, 4 and the one
    # left over to the lower index on a tie: 2, 4 -> sizes 4, 6
    rng = Scripted(("lognormal", arr(1.0, 3.0)), ("permutation", np.arange(10)[::-1]))
    part = parse_partition("quantity").draw(PartitionData(np.zeros(10, np.int64)), 2, rng, min_size=2)
    assert sets(part) == [[6, 7, 8, 9], [0, 1, 2, 3, 4, 5]] and rng.done()
    rng = Scripted(("pareto", lambda a, k: (pytest.approx(a) == 1.2, arr(0.0, 1.0))[1]),
                   ("permutation", np.arange(10)))
    part = parse_partition("quantity[dist=powerlaw,exponent=1.2]").draw(PartitionData(np.zeros(10, np.int64)), 2, rng,
                                                                          min_size=2)
    assert part.sizes().tolist() == [4, 6]  # Pareto weights are 1 + draw: 1 and 2 -> 2 + (2, 4)


def test_shards_sort_by_label_and_deal_random_shards():
    labels = np.array([1, 0, 1, 0, 2, 2, 0, 1])
    rng = Scripted(("permutation", np.arange(8)), ("permutation", arr(2, 0, 3, 1).astype(int)))
    part = parse_partition("shards[per_client=2]").draw(PartitionData(labels), 2, rng)
    # sorted by label: [1, 3, 6 | 0, 2, 7 | 4, 5] -> shards [1,3] [6,0] [2,7] [4,5]; client 0 gets 2, 0
    assert sets(part) == [[1, 2, 3, 7], [0, 4, 5, 6]] and rng.done()


def test_classes_give_each_client_k_classes_split_evenly():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    rng = Scripted(("permutation", np.arange(8)), ("choice", np.array([0])), ("choice", np.array([2])),
                   ("choice", np.array([2])))
    part = parse_partition("classes[k=2]").draw(PartitionData(labels), 2, rng)
    # client 0: class 0, then (0 again, redrawn) 2; client 1: class 1, then 2; class 2's samples split 2 + 1
    assert sets(part) == [[0, 1, 2, 5, 6], [3, 4, 7]] and rng.done()
    rng = Scripted(("permutation", np.arange(8)), ("choice", np.array([1])))
    alone = parse_partition("classes[k=1,assign=random]").draw(PartitionData(labels), 1, rng)
    assert sets(alone) == [[3, 4]]  # classes 0 and 2 are held by nobody: 6 samples unassigned


def test_domain_deals_whole_domains_or_splits_one_among_clients():
    domains = np.array([0, 1, 2, 0, 1, 2, 2])
    data = PartitionData(np.zeros(7, np.int64), domains)
    assert sets(parse_partition("domain").draw(data, 2, Scripted())) == [[0, 1, 3, 4], [2, 5, 6]]
    rng = Scripted(("permutation", arr(1, 0).astype(int)), ("permutation", np.arange(2)),
                   ("permutation", np.arange(3)))
    # 4 clients, 3 domains: clients 0 and 3 share domain 0 (samples 3 | 0 after the permutation)
    assert sets(parse_partition("domain").draw(data, 4, rng)) == [[3], [1, 4], [2, 5, 6], [0]]
    rng = Scripted(("permutation", arr(2, 0, 1).astype(int)))
    assert sets(parse_partition("domain[shuffle=true]").draw(data, 3, rng)) == [[2, 5, 6], [0, 3], [1, 4]]


# --- properties --------------------------------------------------------------------------------------

SCHEMES = ["iid", "dirichlet[alpha=0.3]", "dirichlet[alpha=0.3,counts=shares]",
           "dirichlet[alpha=0.3,counts=shares,balance=true]", "balanced_dirichlet[alpha=0.3]", "quantity",
           "quantity[dist=powerlaw,labels=dirichlet,alpha=0.2]", "shards[per_client=2]", "classes[k=2]",
           "classes[k=2,assign=random]", "classes[k=1,assign=deterministic]", "domain", "domain[shuffle=true]"]


@settings(max_examples=40, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), per_class=st.lists(st.integers(3, 25), min_size=1, max_size=6),
       num_clients=st.integers(1, 5), num_domains=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_each_sample_held_once_and_same_seed_same_partition(scheme, per_class, num_clients, num_domains, seed):
    labels = np.repeat(np.arange(len(per_class)), per_class)
    domains = np.arange(len(labels)) % num_domains
    data = PartitionData(labels, domains)
    part = parse_partition(scheme)
    try:
        a = part.draw(data, num_clients, np.random.default_rng(seed), min_size=1)
    except BenchError as err:  # settings this data cannot satisfy: refused with advice, never a wrong split
        assert any(w in str(err) for w in ("lower", "raise", "fewer")), err
        return
    b = part.draw(data, num_clients, np.random.default_rng(seed), min_size=1)
    assert a.num_clients == num_clients and a.sizes().min() >= 1
    held = np.concatenate(a.client_indices)
    assert len(held) == len(np.unique(held))  # nobody shares a sample
    if part.name == "classes":  # exactly the samples of classes some client holds
        kept = {int(c) for ix in a.client_indices for c in labels[ix]}
        assert np.array_equal(np.sort(held), np.flatnonzero(np.isin(labels, list(kept))))
    else:
        assert np.array_equal(np.sort(held), np.arange(len(labels)))
    for ix in a.client_indices:
        assert np.all(np.diff(ix) > 0)
    assert a.fingerprint() == b.fingerprint()


FIXTURE = PartitionData(np.repeat(np.arange(10), 30), np.arange(300) % 8)
SEED_FREE = {"domain", "classes[k=1,assign=deterministic]"}  # the data alone fixes them (K <= D; no draw)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_other_seeds_give_other_partitions(scheme):
    part = parse_partition(scheme)
    prints = {part.draw(FIXTURE, 5, np.random.default_rng(s), min_size=1).fingerprint() for s in range(4)}
    assert len(prints) == (1 if scheme in SEED_FREE else 4)


# every setting of every scheme: the default and another value (with what that value needs alongside)
CHANGES = {
    "dirichlet": [("alpha=0.1", ""), ("counts=shares", ""), ("balance=true", "counts=shares")],
    "iid": [],
    "balanced_dirichlet": [("alpha=0.1", "")],
    "quantity": [("dist=powerlaw", ""), ("sigma=2", ""), ("exponent=3", "dist=powerlaw"), ("labels=dirichlet", ""),
                 ("alpha=0.1", "labels=dirichlet")],
    "shards": [("per_client=3", "")],
    "classes": [("k=3", ""), ("assign=random", "")],
    "domain": [("shuffle=true", "")],
}


def test_every_setting_of_every_scheme_is_covered():
    for name, cls in PARTITIONERS.items():
        assert {c.split("=")[0] for c, _ in CHANGES[name]} == set(cls.model_fields), name


@pytest.mark.parametrize(("name", "change", "context"),
                         [(n, c, x) for n, items in CHANGES.items() for c, x in items])
def test_each_setting_changes_the_partition_its_id_and_the_run_id(name, change, context):
    before = f"{name}[{context}]" if context else name
    after = f"{name}[{','.join(filter(None, [context, change]))}]"
    a, b = parse_partition(before), parse_partition(after)
    assert render(a) != render(b)
    prints = [p.draw(FIXTURE, 5, np.random.default_rng(1), min_size=1).fingerprint() for p in (a, b)]
    assert prints[0] != prints[1]
    dataset = {"dataset": "hf:/nowhere"} if name == "domain" else {}  # a registered dataset has no domains here
    specs = [make_spec({**dataset, "partition": text}) for text in (before, after)]
    assert specs[0].partition_id != specs[1].partition_id and specs[0].run_id != specs[1].run_id


@pytest.mark.parametrize("text", [*SCHEMES, "quantity[labels=dirichlet]", "DIRICHLET[Alpha=0.5]", "natural_id",
                                  'classes[ k = 3 , assign = "random" ]', "shards[ per_client = 3 ]"])
def test_canonical_text_parses_back_to_the_same_partitioner(text):
    part = parse_partition(text)
    assert parse_partition(render(part)) == part
    assert render(parse_partition(render(part))) == render(part)


@pytest.mark.parametrize(("text", "message"), [
    ("nosuch", "unknown partition 'nosuch'"), ("classes[k=0]", "k: Input should be greater than or equal to 1"),
    ("shards[per_client=0]", "per_client"), ("dirichlet[alpha=0]", "alpha"), ("dirichlet[alpha=nan]", "alpha"),
    ("iid[alpha=1]", "no setting 'alpha'"), ("quantity[sigma=2,dist=powerlaw]", "sigma shapes dist=lognormal"),
    ("quantity[alpha=0.1]", "add labels=dirichlet"), ("dirichlet[balance=true]", "add counts=shares"),
    ("classes[k=2", "never closed"), ("classes[k]", "key=value"), ("classes[k=1,k=2]", "given twice"),
    ("", "empty partition spec"), ("shards[per_client=2.5]", "valid integer"),
])
def test_bad_specs_are_one_clear_error(text, message):
    with pytest.raises(BenchError, match=message.replace("[", r"\[")):
        parse_partition(text)


@pytest.mark.parametrize(("text", "message"), [
    ("shards[per_client=40]", "needs 200 shards, more than the 100 training samples"),
    ("classes[k=11]", "only 10"),
    ("domain", "needs a dataset with domains"),
])
def test_settings_the_data_cannot_satisfy_are_refused(text, message):
    data = PartitionData(np.repeat(np.arange(10), 10), dataset="digits")
    with pytest.raises(BenchError, match=message):
        parse_partition(text).draw(data, 5, np.random.default_rng(0))


def test_a_minimum_that_fixed_sizes_cannot_meet_fails_at_once():
    data = PartitionData(np.zeros(20, np.int64), np.array([0] * 2 + [1] * 18))
    rng = Scripted()  # no draw at all: one domain per client fixes the sizes, so nothing is redrawn
    with pytest.raises(BenchError, match=r"cannot give each of 2 clients at least 5 .*\(smallest client: 2\)"):
        parse_partition("domain").draw(data, 2, rng, min_size=5)


@pytest.mark.parametrize(("text", "fix"), [
    ("quantity[sigma=1e308]", "lower sigma"), ("quantity[sigma=2000]", "lower sigma"),
    ("quantity[dist=powerlaw,exponent=1e-300]", "raise exponent"),
])
def test_size_weights_past_a_double_are_refused_not_cast_to_garbage_sizes(text, fix):
    """Issue 26: inf weights made NaN shares, which int64 casts turned into sizes of -9.2e18."""
    data = PartitionData(np.repeat(np.arange(10), 60))
    with pytest.raises(BenchError, match=f"drew client size weights beyond the range of a double.*{fix}"):
        parse_partition(text).draw(data, 10, np.random.default_rng(0), 6)
    for ordinary in ("quantity[sigma=30]", "quantity[dist=powerlaw,exponent=0.05]"):  # extreme, still finite
        sizes = parse_partition(ordinary).draw(data, 10, np.random.default_rng(0), 6).sizes()
        assert sizes.sum() == 600 and sizes.min() >= 6
