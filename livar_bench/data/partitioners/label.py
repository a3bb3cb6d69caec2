"""Label- and quantity-skew partitioners: IID, Dirichlet (the LIVAR reference draw, and Flower's),
balanced Dirichlet and quantity skew (power-law or log-normal client sizes).

Each takes its randomness from the ``numpy.random.Generator`` it is given and nothing else.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from livar_bench.data.partitioners.base import (
    Alpha,
    Partition,
    PartitionData,
    Partitioner,
    build,
    check_clients,
    from_lists,
    from_owner,
    largest_remainder,
)
from livar_bench.errors import BenchError


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator, min_size: int = 1) -> Partition:
    """Uniformly random split into near-equal shares: a seeded permutation cut into ``num_clients``
    contiguous pieces (sizes differ by at most one, the larger ones first)."""
    check_clients(num_samples, num_clients, min_size)
    order = rng.permutation(num_samples)
    return from_lists(np.array_split(order, num_clients))


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, min_size: int = 6
) -> Partition:
    """The LIVAR reference draw: per class c, p_c ~ Dir(alpha * 1_K); each sample of c goes to client k
    with probability p_c[k] (counts are multinomial, not rounded shares); if any client ends with fewer
    than ``min_size`` samples the whole partition is redrawn."""
    return build(Dirichlet, alpha=alpha).draw(PartitionData(np.asarray(labels)), num_clients, rng, min_size)


class Iid(Partitioner):
    """IID: a seeded permutation cut into near-equal contiguous pieces.

    Flower Datasets: ``IidPartitioner`` cuts a dataset into contiguous shards (``Dataset.shard``) and
    leaves the shuffling to the caller; this is that partitioner applied to the training set in the order
    of ``rng.permutation(N)`` (tests/data/test_flower_agreement.py checks it).
    """

    name: ClassVar[str] = "iid"
    summary: ClassVar[str] = "uniformly random near-equal split (no skew)"

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        return from_lists(np.array_split(rng.permutation(len(data)), num_clients))


class Dirichlet(Partitioner):
    """Dirichlet label skew: for each class c (in sorted order) p_c ~ Dir(alpha * 1_K) over the K clients.

    ``counts=multinomial`` (default) is the LIVAR reference procedure: each sample of class c goes to client
    k with probability p_c[k], independently, so client counts are multinomial; the whole partition is
    redrawn until every client holds ``min_client_samples`` samples. ``counts=shares`` cuts class c's
    samples at the rounded cumulative shares ``floor(cumsum(p_c) * n_c)`` instead, as Flower Datasets'
    ``DirichletPartitioner`` (and NIID-Bench) do; ``balance=true`` adds their self-balancing: a client that
    already holds more than N / K samples gets no share of later classes.

    Agreement with Flower Datasets ``DirichletPartitioner(alpha, self_balancing=balance)``: the same index
    sets for the same generator, as long as the first acceptable draw comes within Flower's 10 attempts.
    Differences: Flower's minimum is its own ``min_partition_size`` (default 10) and it gives up after
    10 redraws; here the minimum is ``--min-client-samples`` and up to 10,000 redraws are tried. When
    self-balancing leaves no client eligible for a class (possible only with few clients), Flower divides
    by zero; here that class is then split without balancing.
    """

    name: ClassVar[str] = "dirichlet"
    summary: ClassVar[str] = "Dirichlet label skew, per class p_c ~ Dir(alpha) over clients (LIVAR's draw)"
    redraw: ClassVar[bool] = True
    advice: ClassVar[str] = "raise alpha, lower --clients or --min-client-samples"

    alpha: Alpha = Field(0.5, description="Dirichlet concentration (smaller = more label skew).")
    counts: Literal["multinomial", "shares"] = Field(
        "multinomial", description="multinomial: each sample drawn from p_c (LIVAR reference); shares: class "
        "cut at rounded cumulative shares (Flower Datasets, NIID-Bench).")
    balance: bool = Field(False, description="Self-balancing of counts=shares: clients above N/K samples get no "
                                             "more classes (Flower's self_balancing).")

    @model_validator(mode="after")
    def _balance_needs_shares(self) -> Dirichlet:
        if self.balance and self.counts != "shares":
            raise ValueError("balance=true is the self-balancing of counts=shares; add counts=shares")
        return self

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        labels = data.labels
        if self.counts == "multinomial":
            owner = np.empty(len(labels), dtype=np.int64)
            for c in np.unique(labels):
                members = np.flatnonzero(labels == c)
                p = rng.dirichlet(np.full(num_clients, self.alpha))
                owner[members] = rng.choice(num_clients, size=len(members), p=p)
            return from_owner(owner, num_clients)
        held = [[] for _ in range(num_clients)]
        average = len(labels) / num_clients
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            p = rng.dirichlet(np.full(num_clients, self.alpha))
            if self.balance:
                open_ = np.array([len(h) <= average for h in held])
                if (p * open_).sum() > 0:  # every client full: split this class unbalanced (see docstring)
                    p = p * open_ / (p * open_).sum()
            cuts = (np.cumsum(p) * len(members)).astype(int)[:-1]
            for k, piece in enumerate(np.split(members, cuts)):
                held[k].extend(piece.tolist())
        return from_lists(held)


def inner_dirichlet(labels: np.ndarray, sizes: np.ndarray, alpha: float, rng: np.random.Generator) -> Partition:
    """Clients of given ``sizes`` whose label mixes follow q_k ~ Dir(alpha * 1_C) (client-side Dirichlet).

    The allocation of Flower Datasets' ``InnerDirichletPartitioner`` (and FedLab's balanced Dirichlet):
    draw every client's class prior, then repeatedly pick a random client that still has room and give
    it one sample of a class drawn from its prior (the class's last remaining sample); a class that runs
    out is removed from every prior (priors renormalised). Classes are the labels present, in sorted order
    (Flower assumes labels 0..C-1; the same thing when every class is present). A prior left with no mass
    (tiny alpha can give exact zeros) falls back to the classes still available, uniformly, where Flower
    would divide by zero.
    """
    classes = np.unique(labels)
    num_classes = len(classes)
    priors = rng.dirichlet(np.full(num_classes, float(alpha)), size=len(sizes))
    pools = [np.flatnonzero(labels == c) for c in classes]
    remaining = [len(p) for p in pools]
    held = [np.zeros(int(s), dtype=np.int64) for s in sizes]
    room = dict(enumerate(int(s) for s in sizes))
    open_clients = list(range(len(sizes)))
    choices = list(range(num_classes))
    while sum(room.values()) != 0:
        k = rng.choice(open_clients)
        if room[k] == 0:
            open_clients.pop(open_clients.index(k))
            continue
        room[k] -= 1
        while True:
            p = priors[k]
            if not p.sum() > 0:
                p = np.array([1.0 if r > 0 else 0.0 for r in remaining])
                p = p / p.sum()
            c = rng.choice(choices, p=p)
            if remaining[c] == 0:
                priors[:, c] = 0
                with np.errstate(invalid="ignore", divide="ignore"):
                    priors = priors / priors.sum(axis=1, keepdims=True)
                priors = np.nan_to_num(priors, nan=0.0)
                continue
            remaining[c] -= 1
            held[k][room[k]] = pools[c][remaining[c]]
            break
    return from_lists(held)


def equal_sizes(num_samples: int, num_clients: int) -> np.ndarray:
    """Near-equal client sizes summing to ``num_samples`` (the larger ones first, as np.array_split)."""
    return np.array([len(p) for p in np.array_split(np.arange(num_samples), num_clients)], dtype=np.int64)


class BalancedDirichlet(Partitioner):
    """Equal client sizes (N/K, the larger first), each client's label mix q_k ~ Dir(alpha * 1_C).

    The skew lives on the client side (a client prefers a few classes) while sizes stay equal, so label
    skew is studied without quantity skew. Allocation as ``inner_dirichlet``: the same index sets as
    Flower Datasets' ``InnerDirichletPartitioner(partition_sizes=equal sizes, alpha)`` for the same generator.
    """

    name: ClassVar[str] = "balanced_dirichlet"
    summary: ClassVar[str] = "equal client sizes, client label mixes q_k ~ Dir(alpha) over classes"

    alpha: Alpha = Field(0.5, description="Dirichlet concentration of each client's label mix.")

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        return inner_dirichlet(data.labels, equal_sizes(len(data), num_clients), self.alpha, rng)


class Quantity(Partitioner):
    """Quantity skew: client sizes from a heavy-tailed law, labels IID or Dirichlet within them.

    Sizes: weights w_k ~ Pareto(exponent) with scale 1 (``dist=powerlaw``, P(w > x) = x^-exponent) or
    w_k ~ LogNormal(0, sigma) (``dist=lognormal``, FedLab's unbalanced split), drawn in client order; client
    k gets ``min_size + `` its Hamilton (largest-remainder) share of the N - K * min_size samples left, so
    every sample is used and every client holds at least ``--min-client-samples`` (no redraws needed).
    Labels: ``labels=iid`` deals a seeded permutation of the training set in contiguous pieces of those
    sizes (Flower Datasets' ``SizePartitioner`` on a shuffled set); ``labels=dirichlet`` fills them with
    ``inner_dirichlet`` (Flower's ``InnerDirichletPartitioner`` with these sizes) at the run's alpha.
    Flower Datasets has no random-size partitioner (its exponential/linear/square ones fix sizes by id).
    """

    name: ClassVar[str] = "quantity"
    summary: ClassVar[str] = "client sizes ~ power law or log-normal; labels iid or Dirichlet(alpha)"

    dist: Literal["lognormal", "powerlaw"] = Field("lognormal", description="Law of the client size weights.")
    sigma: float = Field(1.0, gt=0, description="Log-normal sigma of the size weights (dist=lognormal).")
    exponent: float = Field(1.5, gt=0, description="Pareto tail exponent of the size weights (dist=powerlaw).")
    labels: Literal["iid", "dirichlet"] = Field("iid", description="Labels within clients: iid, or client label "
                                                                   "mixes ~ Dir(alpha).")
    alpha: Alpha = Field(0.5, description="Dirichlet concentration of the label mixes (labels=dirichlet).")

    @model_validator(mode="after")
    def _relevant(self) -> Quantity:
        given = self.model_fields_set
        if "sigma" in given and self.dist != "lognormal":
            raise ValueError("sigma shapes dist=lognormal; with dist=powerlaw give exponent")
        if "exponent" in given and self.dist != "powerlaw":
            raise ValueError("exponent shapes dist=powerlaw; add dist=powerlaw or give sigma")
        if "alpha" in given and self.labels != "dirichlet":
            raise ValueError("alpha sets the label mixes of labels=dirichlet; add labels=dirichlet")
        return self

    def uses_alpha(self) -> bool:
        return self.labels == "dirichlet"

    def sizes(self, num_samples: int, num_clients: int, rng: np.random.Generator, min_size: int) -> np.ndarray:
        """Client sizes (see the class docstring); consumes K draws of ``rng``."""
        with np.errstate(over="ignore"):  # an overflow is refused just below, with what to change
            if self.dist == "powerlaw":
                weights = rng.pareto(self.exponent, num_clients) + 1.0
            else:
                weights = rng.lognormal(0.0, self.sigma, num_clients)
            total = weights.sum()
        if not (np.isfinite(weights).all() and 0 < total < np.inf):  # NaN shares would be cast to garbage sizes
            setting, fix = (f"exponent={self.exponent:g}", "raise exponent, e.g. exponent=1.5") \
                if self.dist == "powerlaw" else (f"sigma={self.sigma:g}", "lower sigma, e.g. sigma=2")
            raise BenchError(f"partition quantity: {setting} drew client size weights beyond the range of a double "
                             f"(1.8e308), which leaves the client sizes undefined; {fix}")
        return min_size + largest_remainder(num_samples - num_clients * min_size, weights)

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        sizes = self.sizes(len(data), num_clients, rng, min_size)
        if self.labels == "dirichlet":
            return inner_dirichlet(data.labels, sizes, self.alpha, rng)
        order = rng.permutation(len(data))
        return from_lists(np.split(order, np.cumsum(sizes)[:-1]))

