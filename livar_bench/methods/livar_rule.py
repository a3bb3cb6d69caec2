"""LIVAR's LoRA weighting rule: quantile buckets of the A- and B-signals -> a raw weight per bucket.

The paper's rule (Fiorini et al., 2025, arXiv 2507.06813, sec. 3.2; values as in the authors' code):
thresholds are quantiles over all (client, module) signal values of a round, A25/A50 for the A-factor
signal and B60/B80 for the B-factor signal, and the weight of a bucket is a SHAP base value plus
per-bucket offsets:

    base = 0.08813978
    B <  B60          : -0.05  (whatever A)
    B60 <= B <= B80   : +0.01 (A < A25), 0 (A25 <= A <= A50), -0.01 (A > A50)
    B >  B80          : +0.105 (A < A25), +0.03 (A25 <= A <= A50), +0.005 (A > A50)

A rule is stored as JSON (``livar-bench explain`` writes one, ``--livar-rule FILE`` reads it):

    {"format": "livar-rule/1",
     "a_quantiles": [0.25, 0.5], "b_quantiles": [0.6, 0.8],
     "base": 0.08813978,
     "offsets": [[-0.05, -0.05, -0.05], [0.01, 0.0, -0.01], [0.105, 0.03, 0.005]],
     "provenance": {...}}

``offsets[i][j]``: row i = B bucket (low, mid, high), column j = A bucket (low, mid, high).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from livar_bench.errors import BenchError

RULE_FORMAT = "livar-rule/1"
PAPER_BASE = 0.08813978
PAPER_OFFSETS = ((-0.05, -0.05, -0.05), (0.01, 0.0, -0.01), (0.105, 0.03, 0.005))


@dataclass(frozen=True)
class LivarRule:
    """Bucket thresholds (as quantile levels) and the raw weight of each (B bucket, A bucket)."""

    a_quantiles: tuple[float, float] = (0.25, 0.5)
    b_quantiles: tuple[float, float] = (0.6, 0.8)
    base: float = PAPER_BASE
    offsets: tuple[tuple[float, float, float], ...] = PAPER_OFFSETS
    provenance: dict[str, Any] = field(default_factory=lambda: {"source": "paper (arXiv 2507.06813), authors' code"})

    def __post_init__(self) -> None:
        for name, q in (("a_quantiles", self.a_quantiles), ("b_quantiles", self.b_quantiles)):
            if len(q) != 2 or not (0 <= q[0] <= q[1] <= 1):
                raise ValueError(f"{name} must be two increasing levels in [0, 1], got {q}")
        if len(self.offsets) != 3 or any(len(row) != 3 for row in self.offsets):
            raise ValueError("offsets must be a 3x3 table (B bucket rows x A bucket columns)")
        if not all(math.isfinite(v) for row in self.offsets for v in row) or not math.isfinite(self.base):
            raise ValueError("base and offsets must be finite numbers")
        if any(self.base + v < 0 for row in self.offsets for v in row):
            raise ValueError("every bucket weight (base + offset) must be non-negative")

    @property
    def table(self) -> Tensor:
        """[3, 3] raw weights, rows = B bucket, columns = A bucket (float64)."""
        return self.base + torch.tensor(self.offsets, dtype=torch.float64)

    def to_json(self) -> dict[str, Any]:
        return {"format": RULE_FORMAT, "a_quantiles": list(self.a_quantiles), "b_quantiles": list(self.b_quantiles),
                "base": self.base, "offsets": [list(r) for r in self.offsets], "provenance": self.provenance}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))


PAPER_RULE = LivarRule()


def load_rule(path: str | Path | None) -> LivarRule:
    """The paper's rule for None/"paper", else a validated rule read from a JSON file."""
    if path is None or str(path) in ("", "paper"):
        return PAPER_RULE
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchError(f"LIVAR rule file {p} does not exist; create one with `livar-bench explain`")
    try:
        data = json.loads(p.read_text())
    except (ValueError, OSError) as err:
        raise BenchError(f"LIVAR rule file {p} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != RULE_FORMAT:
        raise BenchError(f"LIVAR rule file {p} must be a JSON object with \"format\": \"{RULE_FORMAT}\"")
    unknown = set(data) - {"format", "a_quantiles", "b_quantiles", "base", "offsets", "provenance"}
    if unknown:
        raise BenchError(f"LIVAR rule file {p}: unknown keys {sorted(unknown)}")
    try:
        return LivarRule(
            a_quantiles=tuple(float(v) for v in data["a_quantiles"]),
            b_quantiles=tuple(float(v) for v in data["b_quantiles"]),
            base=float(data["base"]),
            offsets=tuple(tuple(float(v) for v in row) for row in data["offsets"]),
            provenance=dict(data.get("provenance", {})),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise BenchError(f"LIVAR rule file {p} is malformed: {err}") from None


def bucket(values: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """0 below ``low``, 1 within [low, high], 2 above ``high`` (the paper's inclusive middle bucket)."""
    return (values >= low).long() + (values > high).long()
