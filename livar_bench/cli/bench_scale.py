"""``livar-bench bench-scale``: time per round and peak memory as the population grows (cross-device scale)."""

from __future__ import annotations

import json

import typer

from livar_bench.cli import app


@app.command("bench-scale")
def bench_scale(
    methods: str = typer.Option("fedavg,livar,fedsa_lora", help="Comma-separated method specs."),
    clients: str = typer.Option("10,100,1000,10000", help="Comma-separated population sizes."),
    per_round: int = typer.Option(10, help="Clients sampled per round (the same at every population)."),
    rounds: int = typer.Option(4, help="Rounds per run (the first is reported apart: it warms up)."),
    samples: int = typer.Option(60_000, help="Training samples, split IID over the population."),
    steps: int = typer.Option(5, help="Local steps of each sampled client per round."),
    batch_size: int = typer.Option(8, help="Local batch size."),
    backbone: str = typer.Option("livar_micro_vit", help="Backbone (a tiny one: this measures the harness)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Run each method at each population size (one fresh process per run) and report time per round, the
    one-off set-up, peak memory and the per-client state the server keeps.

    Example: livar-bench bench-scale --methods fedavg --clients 10,1000 --rounds 2
    """
    from dataclasses import asdict

    from livar_bench.bench.scale import ScaleSettings, measure, scale_spec
    from livar_bench.errors import BenchError
    from livar_bench.experiments.sweep import parse_numbers, split_list

    counts = parse_numbers(clients, int, "clients") or []
    specs = split_list(methods) or []
    if not counts or not specs:
        raise BenchError("bench-scale needs at least one method and one population, e.g. --methods fedavg --clients 10,1000")
    settings = ScaleSettings(per_round=per_round, rounds=rounds, samples=samples, steps=steps, batch_size=batch_size,
                             backbone=backbone)
    for method in specs:  # every row's run settings are checked before the first process starts
        for k in counts:
            scale_spec(method, k, settings)
    rows = []
    for method in specs:
        base = None
        for k in counts:
            row = measure(method, k, settings)
            rows.append(row)
            base = base or row
            if not as_json:
                typer.echo(f"{method:16s} K={k:<6d} round {row.round_s * 1000:8.1f} ms ({row.round_s / base.round_s:4.2f}x)"
                           f"  first {row.first_round_s * 1000:8.1f} ms  set-up {row.setup_s:6.2f} s  peak RSS "
                           f"{row.peak_rss_bytes / 2**20:7.1f} MiB ({(row.peak_rss_bytes - base.peak_rss_bytes) / 2**20:+6.1f})"
                           f"  client state {row.client_state_bytes / 2**10:8.1f} KiB")
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
