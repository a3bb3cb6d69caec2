"""The one seeding scheme: every random stream derives from (run seed, purpose, round, client).

No code draws from global RNG state, so every method of one (dataset, alpha, seed) sees the same
partition, initial weights and client data order (paired comparisons), a resumed run continues
exactly, and ``run``, ``bench``, ``explain`` and the Flower engine give a client the same stream.
"""

from __future__ import annotations

import numpy as np
import torch

# Purposes of the derived random streams (part of the seed derivation; never reorder).
STREAM_PARTITION, STREAM_INIT, STREAM_CLIENT, STREAM_SERVER, STREAM_SAMPLE = range(5)
STREAM_VAL = 5  # the per-client validation carve (val_fraction > 0)
STREAM_EVAL_LOCAL = 6  # the per-client test subsets of eval_local
STREAM_SYSTEM = 7  # system heterogeneity: each (round, client)'s local work and dropout, a round's stragglers
STREAM_SPEED = 8  # system heterogeneity: each client's device speed (fixed over rounds; deadlines)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and stream keys (independent streams per key tuple)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def generator(seed: int, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


def client_generator(seed: int, round_: int, client: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The stream of client ``client`` in round ``round_``: its sample order and augmentation."""
    return generator(seed, STREAM_CLIENT, round_, client, device=device)
