"""Domains: ImageNet-R renditions from the file names and the DomainNet loader, on small fixtures in the
real layouts; domain partitions of real-layout data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.data import load_dataset
from livar_bench.data.real import rendition
from livar_bench.errors import BenchError, DataNotFoundError
from tests.data.test_data import _colour, _mean_colour, _options, _solid

# ImageNet-R as released: imagenet-r/<wnid>/<rendition>_<n>.jpg plus a README.txt at the top
IMAGENET_R_FILES = ["n01443537/art_0.jpg", "n01443537/cartoon_12.jpg", "n01443537/misc_13.jpg",
                    "n01443537/sketch_0.jpg", "n01443537/sketch_1.jpg", "n12267677/deviantart_22.jpg",
                    "n12267677/toy_7.jpg", "n12267677/sketch_5.jpg", "n12267677/art_3.jpg", "n12267677/misc_2.jpg"]


def write_imagenet_r(root: Path) -> None:
    for i, rel in enumerate(IMAGENET_R_FILES):
        _solid(root / "imagenet-r" / rel, _colour(i))
    (root / "imagenet-r" / "README.txt").write_text("not an image\n")


def nearest(image: torch.Tensor, count: int) -> int:
    """The index of the fixture colour closest to ``image``'s mean (JPEG moves colours by a few levels)."""
    mean = _mean_colour(image)
    return int(np.argmin([np.abs(mean - np.array(_colour(i))).sum() for i in range(count)]))


def test_rendition_is_the_file_name_before_its_number():
    assert [rendition(Path(f).name) for f in IMAGENET_R_FILES[:4]] == ["art", "cartoon", "misc", "sketch"]
    assert rendition("videogame_41.jpg") == "videogame" and rendition("plastic_object_3.jpg") == "plastic_object"
    assert rendition("odd.jpg") == "odd"  # no number: the whole stem


def test_imagenet_r_images_carry_their_rendition(tmp_path):
    write_imagenet_r(tmp_path / "data")
    bundle = load_dataset("imagenet-r", _options(tmp_path / "data", tmp_path / "cache"))
    assert bundle.domain_names == ("art", "cartoon", "deviantart", "misc", "sketch", "toy")
    for split in (bundle.train, bundle.test):
        for image, domain in zip(split.images, split.domains, strict=True):
            file = IMAGENET_R_FILES[nearest(image, len(IMAGENET_R_FILES))]
            assert bundle.domain_names[int(domain)] == rendition(Path(file).name)
    again = load_dataset("imagenet-r", _options(tmp_path / "data", tmp_path / "cache"))  # from the cache
    assert torch.equal(again.train.domains, bundle.train.domains)


DOMAINNET_CLASSES = ["aircraft_carrier", "bird", "feather", "headphones", "ice_cream", "teapot", "tiger", "whale",
                     "windmill", "wine_glass", "zebra"]  # official labels 0..10 here (alphabetical, as released)


def write_domainnet(root: Path, domains=("clipart", "real", "sketch"), splits_folder: bool = False) -> dict:
    """<root>/domainnet/<domain>/<class>/<domain>_<nnn>_<nnnnnn>.jpg and <domain>_{train,test}.txt; two train
    images and one test image per (domain, class); returns {(split, relative path): colour index}."""
    base, colours, n = root / "domainnet", {}, 0
    for domain in domains:
        lines = {"train": [], "test": []}
        for label, name in enumerate(DOMAINNET_CLASSES):
            for k, split in enumerate(("train", "train", "test")):
                rel = f"{domain}/{name}/{domain}_{label:03d}_{k:06d}.jpg"
                _solid(base / rel, _colour(n % 144))
                colours[(split, rel)] = n
                lines[split].append(f"{rel} {label}")
                n += 1
        where = base / "splits" if splits_folder else base
        where.mkdir(parents=True, exist_ok=True)
        for split, items in lines.items():
            (where / f"{domain}_{split}.txt").write_text("\n".join(items) + "\n")
    return colours


@pytest.mark.parametrize("splits_folder", [False, True])
def test_domainnet_reads_the_official_split_files(tmp_path, splits_folder):
    write_domainnet(tmp_path / "data", splits_folder=splits_folder)
    bundle = load_dataset("domainnet", _options(tmp_path / "data", tmp_path / "cache"))
    assert bundle.class_names == tuple(DOMAINNET_CLASSES) and bundle.domain_names == ("clipart", "real", "sketch")
    assert (len(bundle.train), len(bundle.test)) == (3 * 11 * 2, 3 * 11)
    # split files list domain by domain, class by class: labels and domains follow
    assert bundle.train.labels.tolist() == [y for _ in range(3) for y in range(11) for _ in range(2)]
    assert bundle.test.domains.tolist() == [d for d in range(3) for _ in range(11)]


def test_domainnet10_is_fedbns_ten_classes_relabelled(tmp_path):
    colours = write_domainnet(tmp_path / "data")
    bundle = load_dataset("domainnet10", _options(tmp_path / "data", tmp_path / "cache"))
    assert bundle.class_names == tuple(DOMAINNET_CLASSES[1:]) and bundle.num_classes == 10
    assert len(bundle.test) == 30 and bundle.test.labels.tolist() == list(range(10)) * 3
    # the first test image is clipart's bird (official label 1), now label 0
    first = colours[("test", "clipart/bird/clipart_001_000002.jpg")]
    assert nearest(bundle.test.images[0], 144) == first % 144


def test_domainnet_errors_say_what_is_missing(tmp_path):
    with pytest.raises(DataNotFoundError, match="M3SDA"):
        load_dataset("domainnet", _options(tmp_path, tmp_path / "cache"))
    (tmp_path / "domainnet").mkdir()
    with pytest.raises(DataNotFoundError, match="no <domain>_train.txt"):
        load_dataset("domainnet", _options(tmp_path, tmp_path / "cache"))
    write_domainnet(tmp_path / "d2", domains=("clipart",))
    (tmp_path / "d2" / "domainnet" / "clipart" / "zebra" / "clipart_010_000000.jpg").unlink()
    with pytest.raises(DataNotFoundError, match="clipart_010_000000.jpg is listed"):
        load_dataset("domainnet", _options(tmp_path / "d2", tmp_path / "cache"))
    (tmp_path / "d2" / "domainnet" / "clipart_test.txt").write_text("clipart/bird/x.jpg one\n")
    with pytest.raises(BenchError, match="line 1 .* is not '<path> <label>'"):
        load_dataset("domainnet", _options(tmp_path / "d2", tmp_path / "cache"))


def test_domain_partition_of_imagenet_r_gives_clients_whole_renditions(tmp_path):
    from livar_bench.federation.partitions import make_partition

    write_imagenet_r(tmp_path / "data")
    bundle = load_dataset("imagenet-r", _options(tmp_path / "data", tmp_path / "cache"))
    spec = make_spec({"dataset": "imagenet-r", "partition": "domain", "num_clients": 3, "min_client_samples": 1})
    part = make_partition(spec, bundle.train.labels.numpy(), bundle.train.domains.numpy())
    held = [set(bundle.train.domains[ix].tolist()) for ix in part.client_indices]
    present = sorted(set(bundle.train.domains.tolist()))
    groups = [set(g.tolist()) for g in np.array_split(np.array(present), 3)]
    assert held == groups  # consecutive groups of the sorted renditions, whole


def test_spec_accepts_domain_partitions_only_of_datasets_with_domains():
    for name in ("imagenet-r", "domainnet", "domainnet10"):
        assert make_spec({"dataset": name, "partition": "domain"}).partition == "domain"
    with pytest.raises(BenchError, match="imagenet-r, domainnet, domainnet10, an hf: dataset"):
        make_spec({"dataset": "cifar100", "partition": "domain"})
