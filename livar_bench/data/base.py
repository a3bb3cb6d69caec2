"""Dataset containers: every dataset is held as decoded uint8 image tensors plus int64 labels.

Images are decoded and resized once (then cached on disk), so training never waits on JPEG decoding
and the whole split can live on the accelerator; augmentation runs there too (see transforms.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` [N, 3, H, W] uint8, ``labels`` [N] int64 and, for datasets that have them,
    ``domains`` [N] int64 (the domain of each image: ImageNet-R's rendition, DomainNet's domain)."""

    images: Tensor
    labels: Tensor
    domains: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        if self.domains is not None and self.domains.shape != self.labels.shape:
            raise ValueError(f"{len(self.labels)} labels but domains of shape {tuple(self.domains.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> ImageSplit:
        domains = None if self.domains is None else self.domains[index.to(self.domains.device)]
        return ImageSplit(self.images[index], self.labels[index], domains)

    def to(self, device: torch.device) -> ImageSplit:
        # Domains stay on the host: only partitioning and reporting read them.
        return ImageSplit(self.images.to(device, non_blocking=True), self.labels.to(device, non_blocking=True),
                          self.domains)


@dataclass(frozen=True)
class DatasetBundle:
    """A loaded dataset: train and test splits and their class names."""

    name: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range used for training
    eval_crop: float = 0.875  # central fraction kept at test time (Resize(256) + CenterCrop(224))
    domain_names: tuple[str, ...] | None = None  # names of the domain ids in the splits' ``domains``
    # leave-domains-out (data.domains.hold_out): test images of the held-out domains, and their names
    heldout_test: ImageSplit | None = None
    heldout_domains: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class LoadOptions:
    """Where and how to load a dataset."""

    data_root: str | None = None
    cache_dir: str | None = None
    download: bool = False
    storage_size: int = 224  # side length that variable-size images are resized to once, at decode time


@dataclass(frozen=True)
class DatasetDef:
    """A registered dataset: how to load it and how a user obtains its files."""

    name: str
    loader: Callable[[LoadOptions], DatasetBundle]
    num_classes: int
    summary: str
    how_to_get: str
    offline: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)
    domains: bool = False  # its splits carry domain ids (domain partitions need them)
