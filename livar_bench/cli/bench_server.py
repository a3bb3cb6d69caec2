"""``livar-bench bench-server``: server time and memory of each method as the number of clients grows."""

from __future__ import annotations

import json

import typer

from livar_bench.cli import app


@app.command("bench-server")
def bench_server(
    methods: str = typer.Option("fedavg,livar,fedex_lora,flora,ffa_lora,fedsa_lora",
                                help="Comma-separated method specs."),
    clients: str = typer.Option("10,100", help="Comma-separated client counts."),
    rank: int = typer.Option(16, help="LoRA rank r."),
    classes: int = typer.Option(100, help="Number of classes (head and class statistics)."),
    depth: int = typer.Option(12, help="Transformer blocks (ViT-B: 12)."),
    dim: int = typer.Option(768, help="Width (ViT-B: 768)."),
    mlp: int = typer.Option(3072, help="MLP width (ViT-B: 3072)."),
    repeats: int = typer.Option(3, help="Server steps per row; the median is reported."),
    gpu_gb: float = typer.Option(80.0, help="GPU memory (GB) for the 'max clients' estimate."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Time each method's server step on synthetic ViT-sized client updates at several client counts.

    Example: livar-bench bench-server --methods fedavg,flora --clients 10,100 --depth 2
    """
    from livar_bench.bench.server import max_clients, measure
    from livar_bench.device import resolve_device
    from livar_bench.experiments.sweep import parse_numbers, split_list

    dev = resolve_device(device)
    counts = parse_numbers(clients, int, "clients") or []
    rows, table = [], []
    for method in split_list(methods) or []:
        mine = [measure(method, k, depth=depth, dim=dim, mlp=mlp, rank=rank, classes=classes, repeats=repeats,
                        device=dev) for k in counts]
        fits = max_clients(mine, gpu_gb * 1e9)
        rows += mine
        for row in mine:
            table.append({**row.__dict__, "max_clients_on_gpu": fits, "gpu_gb": gpu_gb, "device": str(dev)})
            if not as_json:
                peak = f"{row.peak_cuda_bytes / 2**20:.0f} MiB" if row.peak_cuda_bytes is not None else "-"
                typer.echo(f"{row.method:24s} K={row.clients:<5d} server {row.server_s * 1000:9.1f} ms  held "
                           f"{row.held_bytes / 2**20:9.1f} MiB  state {row.state_bytes / 2**20:8.1f} MiB  peak {peak}"
                           + (f"  ~{fits:,} clients fit {gpu_gb:g} GB" if fits is not None else ""))
    if as_json:
        typer.echo(json.dumps(table, indent=2))
