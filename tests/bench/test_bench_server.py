"""bench-server: held bytes counted by hand, per-client server state detected, linear fit of max clients."""

from __future__ import annotations

from livar_bench.bench.server import ServerRow, max_clients, measure

SMALL = dict(depth=1, dim=8, mlp=16, rank=2, classes=3, repeats=1)


def test_fedavg_held_bytes_by_hand() -> None:
    row = measure("fedavg", 4, **SMALL)
    # LoRA: A [2, 8] x4 modules, B [24, 2], [8, 2], [16, 2], [8, 2]; head [3, 8] + [3] -> floats
    params = 2 * 8 * 3 + 2 * 16 + (24 + 8 + 16 + 8) * 2 + 3 * 8 + 3
    per_client = 4 * params + 8 * 3  # float32 params + int64 class counts
    assert row.state_bytes == 4 * params  # FedAvg keeps only the global params
    assert row.held_bytes == 4 * per_client + row.state_bytes


def test_personal_state_grows_with_clients_and_fedavg_state_does_not() -> None:
    fedavg = [measure("fedavg", k, **SMALL) for k in (2, 4)]
    fedsa = [measure("fedsa_lora", k, **SMALL) for k in (2, 4)]
    assert fedavg[0].state_bytes == fedavg[1].state_bytes
    assert fedsa[1].state_bytes > fedsa[0].state_bytes  # each client's B is kept
    assert max_clients(fedsa, 1e9) < max_clients(fedavg, 1e9)


def test_max_clients_is_a_linear_extrapolation() -> None:
    rows = [ServerRow("m", 10, 0.0, 1_000 + 10 * 100, 1_000, None), ServerRow("m", 20, 0.0, 1_000 + 20 * 100, 1_000, None)]
    assert max_clients(rows, 11_000) == 100
    assert max_clients(rows[:1], 11_000) is None
