"""Flower engine (optional extra ``.[flower]``): every method as a Flower strategy, clients as a ClientApp.

Nothing here re-implements a method or the client training: the strategy (``strategy.py``) calls the
same ``Method.server_step`` as the in-process round loop, and the ClientApp (``clientapp.py``) trains
with the same client phase (``client.phase.train_clients``) and seeding. ``codec.py`` turns tensors,
client updates and their signals into Flower records with readable names; ``engine.py`` runs the
harness's round loop through Flower's simulation engine (``livar-bench run --engine flower``);
``serverapp.py`` is the ServerApp that ``flwr run`` starts in a real deployment (examples/flower/), with its
run settings and their precedence in ``settings.py``.

This package is imported only when the Flower engine is used, so the harness works without flwr.
"""

from __future__ import annotations

import importlib.util

from livar_bench.errors import BenchError

INSTALL_HINT = "pip install 'livar-bench[flower]'"


def require_flwr() -> None:
    """Raise a one-line ``BenchError`` naming the extra when flwr (or its simulation backend) is missing."""
    try:
        import flwr  # noqa: F401
        from flwr.serverapp.strategy import Strategy  # noqa: F401
    except ImportError:
        raise BenchError(f"--engine flower needs Flower, which is not installed: {INSTALL_HINT}") from None
    if importlib.util.find_spec("ray") is None:
        raise BenchError(f"--engine flower needs Flower's simulation backend (ray), which is not installed: "
                         f"{INSTALL_HINT}")
