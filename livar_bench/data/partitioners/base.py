"""What every partitioner shares: the ``Partition`` it returns, the data it reads, its settings class.

A partitioner is a small pydantic model: its fields are its settings (type, range and help on the
field), ``draw`` turns the training labels (and domains, for natural-id partitions) into client index
sets using only the ``numpy.random.Generator`` it is handed. Nothing reads global random state, so the
same (settings, seed) always gives the same partition, and every method of a cell trains on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from livar_bench.errors import BenchError

MAX_ATTEMPTS = 10_000  # redraws of a random partition until every client holds min_size samples

# The largest Dirichlet concentration accepted. numpy's Dir(alpha * 1_K) normalises K gamma draws of shape
# alpha, each about alpha, so it overflows (NaN shares, then "probabilities do not sum to 1") once K * alpha
# passes the largest double, 1.8e308: 2 clients at 1e308, 100 at 1e307. Nothing is lost below the bound:
# from about 1e33 up every gamma draw is alpha - 1/3 to double precision and every share exactly 1/K.
# At 1e100, K * alpha stays finite for any number of clients or classes an int64 index can count (< 9.3e18).
MAX_ALPHA = 1e100
ALPHA_BOUND = ("at most 1e100 (a larger Dirichlet concentration overflows numpy's draw, and from about 1e33 up "
               "every client's share is already exactly 1/K); give a smaller alpha, or --iid for an IID split")


def check_alpha(value: float) -> float:
    """``value`` when it is a Dirichlet concentration numpy can draw from (see ``MAX_ALPHA``)."""
    if value > MAX_ALPHA:
        raise ValueError(ALPHA_BOUND)
    return value


# The type of every Dirichlet concentration (RunSpec.alpha, the partitioners' alpha): positive, finite, bounded.
Alpha = Annotated[float, Field(gt=0), AfterValidator(check_alpha)]


@dataclass(frozen=True)
class Partition:
    """Sorted training-sample indices of each client (a sample is held by at most one client)."""

    client_indices: tuple[np.ndarray, ...]

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def sizes(self) -> np.ndarray:
        return np.array([len(ix) for ix in self.client_indices], dtype=np.int64)

    def class_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """[K, C] number of samples of each class per client."""
        return np.stack([np.bincount(labels[ix], minlength=num_classes) for ix in self.client_indices])

    def fingerprint(self) -> str:
        """Hash of the actual index sets (checks that two runs really used the same partition)."""
        h = hashlib.sha256()
        for ix in self.client_indices:
            h.update(np.asarray(ix, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:12]


def from_owner(owner: np.ndarray, num_clients: int) -> Partition:
    """The partition of an owner vector (owner[i] = client of sample i, -1 = nobody)."""
    order = np.argsort(owner, kind="stable")  # one pass instead of K scans: 10,000 clients stay cheap
    bounds = np.searchsorted(owner[order], np.arange(num_clients + 1))
    return Partition(tuple(np.sort(order[bounds[k]:bounds[k + 1]]) for k in range(num_clients)))


def from_lists(lists: list[np.ndarray] | list[list[int]]) -> Partition:
    """The partition of per-client index lists (each sorted here)."""
    return Partition(tuple(np.sort(np.asarray(ix, dtype=np.int64)) for ix in lists))


@dataclass(frozen=True)
class PartitionData:
    """What a partitioner may read: training labels and, for datasets that have them, domain ids.

    Attributes:
        labels: [N] int64 class of each training sample.
        domains: [N] int64 domain of each sample (ImageNet-R rendition, DomainNet domain, an hf
            dataset's ``domain`` column), or None for a dataset without domains.
        dataset: the dataset's name (for error messages).
    """

    labels: np.ndarray
    domains: np.ndarray | None = None
    dataset: str = "this dataset"

    def __len__(self) -> int:
        return int(len(self.labels))


def check_clients(num_samples: int, num_clients: int, min_size: int) -> None:
    """Enough samples for ``num_clients`` clients of at least ``min_size`` each."""
    if num_clients < 1:
        raise BenchError("need at least one client")
    if num_clients * min_size > num_samples:
        raise BenchError(
            f"{num_clients} clients with at least {min_size} samples each need {num_clients * min_size} "
            f"training samples, but the dataset has {num_samples}; use fewer --clients or a smaller --min-client-samples"
        )


class Partitioner(BaseModel):
    """Settings of one partitioning scheme (the fields) and its draw.

    Subclasses set ``name`` (the registry name in specs), ``summary`` (one line for ``ls partitioners``)
    and implement ``draw_once``. ``uses_alpha`` says whether the scheme reads the run's Dirichlet
    concentration ``alpha`` (the RunSpec field; part of the run id only then). ``needs_domains``: the
    scheme reads ``PartitionData.domains``. ``redraw``: a draw whose smallest client falls below the
    minimum is repeated (random sizes); otherwise it is an error at once (sizes fixed by the settings).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_domains: ClassVar[bool] = False
    redraw: ClassVar[bool] = False
    advice: ClassVar[str] = "use fewer --clients or a smaller --min-client-samples"

    def attempts(self) -> int:
        """How many draws to try for the minimum size (one when sizes do not depend on the draw)."""
        return MAX_ATTEMPTS if self.redraw else 1

    def uses_alpha(self) -> bool:
        return "alpha" in type(self).model_fields

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        """One draw (``min_size``: for schemes that build the minimum in rather than redraw)."""
        raise NotImplementedError

    def draw(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int = 1) -> Partition:
        """The partition: ``draw_once`` until every client has ``min_size`` samples (see ``redraw``)."""
        check_clients(len(data), num_clients, min_size)
        if self.needs_domains and data.domains is None:
            raise BenchError(no_domains(self.name, data.dataset))
        attempts = self.attempts()
        for _ in range(attempts):
            part = self.draw_once(data, num_clients, rng, min_size)
            smallest = int(part.sizes().min())
            if smallest >= min_size:
                return part
        tries = f" in {attempts} attempts" if attempts > 1 else ""
        raise BenchError(f"partition {self.name} cannot give each of {num_clients} clients at least {min_size} "
                         f"training samples{tries} (smallest client: {smallest}); {self.advice}")


def build(cls: type[Partitioner], **settings: object) -> Partitioner:
    """``cls(**settings)``, a settings problem as one ``BenchError`` naming the scheme and the setting."""
    try:
        return cls(**settings)
    except ValidationError as err:
        raise BenchError(f"partition {cls.name}: {settings_problem(err)}") from None


def settings_problem(err: ValidationError) -> str:
    """One readable line per problem of a partitioner's settings."""
    out = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif "input" in item and not isinstance(item["input"], dict):
            msg = f"{msg} (got {item['input']!r})"
        out.append(f"{where}: {msg}" if where else msg)
    return "; ".join(out)


def no_domains(name: str, dataset: str, known: tuple[str, ...] = ()) -> str:
    """The message for a domain partition asked of data without domains (``known``: datasets with some)."""
    have = ", ".join((*known, "an hf: dataset with a 'domain' column"))
    return (f"partition {name} needs a dataset with domains ({have}), but {dataset} has none; "
            f"pick another --partition (livar-bench ls partitioners)")


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` exactly (Hamilton's method: floors,
    then one more to the largest fractional parts; ties to the lower index)."""
    share = weights / weights.sum() * total
    out = np.floor(share).astype(np.int64)
    rest = total - int(out.sum())
    out[np.argsort(-(share - out), kind="stable")[:rest]] += 1
    return out
