"""Datasets that need no download: scikit-learn's bundled digits and seeded synthetic images."""

from __future__ import annotations

import numpy as np
import torch

from livar_bench.data.base import DatasetBundle, ImageSplit, LoadOptions

DIGITS_SPLIT_SEED = 0  # fixed, so that every run sees the same train/test split
SYNTHETIC_SEED = 1234


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split into (train indices, test indices), each sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits_bundle(options: LoadOptions) -> DatasetBundle:
    """scikit-learn's 1,797 8x8 handwritten digits (10 classes), grey replicated to RGB, 80/20 split.

    Images stay 8x8 here; the device transform upsamples them to the backbone's input size.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = np.asarray(raw.images, dtype=np.float64)  # [N, 8, 8], values 0..16
    images = torch.from_numpy(np.round(pixels / 16.0 * 255.0).astype(np.uint8))
    images = images[:, None].expand(-1, 3, -1, -1).contiguous()  # [N, 3, 8, 8]
    labels = np.asarray(raw.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, 0.2, DIGITS_SPLIT_SEED)
    labels_t = torch.from_numpy(labels)
    return DatasetBundle(
        name="digits",
        train=ImageSplit(images[train_idx], labels_t[train_idx]),
        test=ImageSplit(images[test_idx], labels_t[test_idx]),
        class_names=tuple(str(i) for i in range(10)),
        crop_scale=(0.6, 1.0),
        eval_crop=1.0,
    )


def make_synthetic(
    num_classes: int = 10, train_per_class: int = 60, test_per_class: int = 20, size: int = 16, seed: int = SYNTHETIC_SEED
) -> DatasetBundle:
    """Class-conditional images: a per-class smooth colour pattern plus pixel noise.

    Classes are separable but not trivially so (noise std is about a third of the pattern contrast).
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)  # one pattern per class
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def draw(per_class: int) -> ImageSplit:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        noise = torch.randn(len(labels), 3, size, size, generator=g) * 0.12
        images = (patterns[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return ImageSplit(images, labels)

    train = draw(train_per_class)
    test = draw(test_per_class)
    return DatasetBundle("synthetic", train, test, tuple(f"class{i}" for i in range(num_classes)), crop_scale=(0.6, 1.0), eval_crop=1.0)


def load_synthetic_bundle(options: LoadOptions) -> DatasetBundle:
    return make_synthetic()
