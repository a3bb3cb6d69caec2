"""Everything a run builds before its first round: data, the shared model, the partition, client splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livar_bench.client.train import embed, evaluate
from livar_bench.config import RunSpec
from livar_bench.data import DatasetBundle, ImageSplit, LoadOptions, load_dataset
from livar_bench.data import record as data_record
from livar_bench.data.domains import hold_out
from livar_bench.data.partition import (
    Partition,
)
from livar_bench.data.transforms import DeviceTransform
from livar_bench.device import autocast_dtype, resolve_device
from livar_bench.errors import WeightsError
from livar_bench.federation.partitions import obtain_partition
from livar_bench.models import build_model
from livar_bench.models.loading import weights_problem
from livar_bench.seeding import (
    STREAM_EVAL_LOCAL,
    derive_seed,
)
from livar_bench.types import Params, ServerData


class ClientSplits(Sequence):
    """Each client's training split, gathered from the shared training set when it is asked for.

    Holding every client's images at once would copy the whole training set; gathering on access costs a
    round only for the clients it samples (10 of 10,000 at cross-device scale), and ``size`` needs no
    gather at all.
    """

    def __init__(self, train: ImageSplit, indices: Sequence[np.ndarray]) -> None:
        self.train = train
        self.indices = [torch.from_numpy(np.asarray(ix, dtype=np.int64)) for ix in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int | slice) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(len(self))[k]]
        return self.train.subset(self.indices[k].to(self.train.labels.device))

    def size(self, k: int) -> int:
        """Client ``k``'s number of training samples."""
        return len(self.indices[k])

    def max_size(self) -> int:
        """The largest client's number of samples (no gather)."""
        return max((len(ix) for ix in self.indices), default=0)

    def labels(self, k: int) -> torch.Tensor:
        """Client ``k``'s training labels (on the host)."""
        return self.train.labels[self.indices[k].to(self.train.labels.device)].cpu()


@dataclass
class Setup:
    """Everything a run builds before its first round."""

    spec: RunSpec
    device: torch.device
    bundle: DatasetBundle
    model: Any
    train_tf: DeviceTransform
    eval_tf: DeviceTransform
    partition: Partition
    clients: ClientSplits
    test: Any
    dtype: torch.dtype | None
    val: Any = None  # union of the clients' validation carves, or None when val_fraction == 0
    local_tests: dict[int, Any] | None = None  # client -> test subset with its label distribution (eval_local)
    heldout: Any = None  # test images of the held-out domains (--heldout-domains), or None


def load_run_dataset(spec: RunSpec) -> DatasetBundle:
    """The dataset a run trains on (decoded once into the cache; subsampled when the spec asks; without the
    held-out domains, whose test images become ``heldout_test``)."""
    options = LoadOptions(spec.data_root, spec.cache_dir, spec.download, storage_size=spec.image_size or 224)
    bundle = load_dataset(spec.dataset, options, spec.max_train_samples, spec.max_test_samples)
    return hold_out(bundle, spec.heldout_domains or ())


def data_provenance(spec: RunSpec) -> dict[str, object]:
    """What spec.json records of the run's data beyond its settings (a folder's content digest, split
    rule and file counts; ``{}`` for the named datasets but cifar10's image copy)."""
    return data_record(spec.dataset, LoadOptions(spec.data_root, spec.cache_dir, spec.download))


def setup_run(spec: RunSpec, bundle: DatasetBundle | None = None, partitions_dir: Path | None = None) -> Setup:
    """Load data, build the shared model, draw (or reuse) the partition and move client data to the device."""
    device = resolve_device(spec.device)
    if bundle is None:
        problem = weights_problem(spec.backbone, pretrained=spec.pretrained, weights=spec.weights)
        if problem:  # before decoding a dataset, which can take minutes
            raise WeightsError(problem)
        bundle = load_run_dataset(spec)
    model, info = build_model(
        spec.backbone, bundle.num_classes, rank=spec.max_rank, alpha=spec.lora_alpha, targets=spec.lora_targets,
        pretrained=spec.pretrained, weights=spec.weights, image_size=spec.image_size,
    )
    model.check_rank()
    model.to(device)
    train_tf = DeviceTransform(info.input_size, info.mean, info.std, scale=bundle.crop_scale, eval_crop=bundle.eval_crop)
    labels = bundle.train.labels.numpy()
    domains = None if bundle.train.domains is None else bundle.train.domains.numpy()
    partition, val = obtain_partition(spec, labels, bundle.num_classes, partitions_dir, domains)
    train = bundle.train.to(device)
    client_ix = partition.client_indices
    if val is not None:  # clients train on what the validation carve leaves
        client_ix = tuple(np.setdiff1d(ix, v) for ix, v in zip(client_ix, val.client_indices, strict=True))
    clients = ClientSplits(train, client_ix)
    val_split = None
    if val is not None:
        val_split = train.subset(torch.from_numpy(np.sort(np.concatenate(val.client_indices))).to(device))
    local_tests = local_test_sets(spec, bundle.test, [clients.labels(k) for k in range(len(clients))],
                                  bundle.num_classes) if spec.eval_local else None
    test = bundle.test.to(device)
    heldout = bundle.heldout_test.to(device) if bundle.heldout_test is not None else None
    return Setup(spec, device, bundle, model, train_tf, train_tf, partition, clients, test,
                 autocast_dtype(spec.precision, device), val_split,
                 {k: test.subset(ix.to(device)) for k, ix in local_tests.items()} if local_tests else None, heldout)


LOCAL_TEST_SIZE = 200  # images per client test subset (fewer when the test set is smaller)


def local_test_sets(spec: RunSpec, test: Any, client_labels: list[torch.Tensor], num_classes: int) -> dict[int, torch.Tensor]:
    """Per client, test indices drawn with the client's training label distribution (seeded by the run's
    seed and the client, so every method of a cell gets the same subsets): round(p_kc * M) images of class c,
    without replacement, M = min(LOCAL_TEST_SIZE, test size), capped at what the test set holds."""
    labels = test.labels.cpu().numpy()
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    size = min(LOCAL_TEST_SIZE, len(labels))
    out = {}
    for k, own in enumerate(client_labels):
        rng = np.random.default_rng(derive_seed(spec.seed, STREAM_EVAL_LOCAL, k))
        share = np.bincount(own.numpy(), minlength=num_classes) / max(len(own), 1)
        picks = [rng.choice(by_class[c], size=min(int(round(share[c] * size)), len(by_class[c])), replace=False)
                 for c in range(num_classes) if share[c] > 0]
        out[k] = torch.from_numpy(np.sort(np.concatenate(picks))) if picks else torch.zeros(0, dtype=torch.long)
    return out


class HeldOutData(ServerData):
    """``RoundContext.server_data`` of a run with a validation carve: the server's own labelled data."""

    def __init__(self, s: Setup) -> None:
        self._s = s

    def features(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._s
        s.model.load_params(params)
        feats, _ = embed(s.model, s.val.images, s.eval_tf, s.spec.eval_batch_size, s.dtype)
        return feats, s.val.labels

    def loss(self, params: Params) -> float:
        s = self._s
        return evaluate(s.model, params, s.val, s.eval_tf, s.spec.eval_batch_size, s.dtype)["loss"]
