"""Short stable hashes of JSON-able settings: run ids, partition ids, cache keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def json_digest(obj: Any, length: int = 12) -> str:
    """First ``length`` hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys; values JSON
    cannot encode are written with ``str``)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
