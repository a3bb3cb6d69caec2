"""``livar-bench bench``: images/s, peak memory and time per phase, optimised path vs reference style."""

from __future__ import annotations

import json

import typer

from livar_bench.cli import app


@app.command()
def bench(
    backbone: str = typer.Option("livar_tiny_vit", help="Backbone (timm ViT name or livar_tiny_vit)."),
    pretrained: bool = typer.Option(False, "--pretrained/--no-pretrained",
                                    help="Load pretrained weights (speed does not depend on them)."),
    weights: str | None = typer.Option(None, help="Local backbone weights file, as for `run --weights`.",
                                       show_default="none"),
    image_size: int | None = typer.Option(None, help="Input size, a multiple of the patch size.",
                                          show_default="224; a tiny backbone's own"),
    batch_size: int = typer.Option(16, help="Local batch size."),
    lora_rank: int = typer.Option(16, help="LoRA rank r."),
    lora_alpha: float = typer.Option(16.0, help="LoRA alpha."),
    clients: int = typer.Option(4, help="Simulated clients in the measured round."),
    samples_per_client: int = typer.Option(64, help="Synthetic training images per client."),
    epochs: int = typer.Option(1, help="Local epochs."),
    classes: int = typer.Option(100, help="Number of classes of the synthetic task."),
    eval_samples: int = typer.Option(256, help="Synthetic test images."),
    eval_batch_size: int = typer.Option(256, help="Evaluation batch size."),
    method: str = typer.Option("fedavg", help="Aggregation method timed in the aggregation phase."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="Optimised path: auto (bf16 on CUDA), bf16 or fp32."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model's forward (optimised path)."),
    pack: int | None = typer.Option(None, help="Also time client packing (clients per pack; default: auto = "
                                    "min(clients, 10) on CUDA, off on CPU; 0/1 = off)."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also time the reference-style path."),
    repeats: int = typer.Option(1, help="Rounds per path (interleaved); the median per phase is reported."),
    peak_tflops: float = typer.Option(989.0, help="Assumed peak TFLOP/s for %% of peak (989 = H100 SXM bf16 dense)."),
    seed: int = typer.Option(0, help="Seed of the synthetic data and initial weights."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Measure local-training and evaluation images/s, peak memory and time per phase.

    Example: livar-bench bench --backbone vit_base_patch16_224 --clients 10 --batch-size 16 --json
    """
    from livar_bench.bench import BenchSettings, run_bench

    settings = BenchSettings(
        backbone=backbone, pretrained=pretrained, weights=weights, image_size=image_size, batch_size=batch_size, lora_rank=lora_rank,
        lora_alpha=lora_alpha, clients=clients, samples_per_client=samples_per_client, epochs=epochs,
        num_classes=classes, eval_samples=eval_samples, eval_batch_size=eval_batch_size, method=method,
        device=device, precision=precision, compile=compile, pack=pack, reference=reference, repeats=repeats, peak_tflops=peak_tflops, seed=seed,
    )
    result = run_bench(settings)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print(result)


def _print(result: dict) -> None:
    from rich.table import Table

    from livar_bench.cli.ui import console

    s = result["settings"]
    console.print(
        f"{s['backbone']} @ {result['input_size']}px on {result['device_name']} ({result['device']}), "
        f"{s['clients']} clients x {s['samples_per_client']} images, batch {s['batch_size']}, rank {s['lora_rank']}, "
        f"precision {result['precision']}, SDPA attention {'on' if result['fused_attention'] else 'off'}",
        highlight=False,
    )
    table = Table("path", "train img/s", "eval img/s", "train s", "aggregate s", "eval s", "peak MiB (train)")
    for name in ("optimised", "packed", "reference"):
        r = result.get(name)
        if not r:
            continue
        peak = r["peak_mem_mib"].get("train")
        label = f"packed x{result['pack']}" if name == "packed" else name
        table.add_row(label, f"{r['train_images_per_s']:.1f}", f"{r['eval_images_per_s']:.1f}", f"{r['train_s']:.3f}",
                      f"{r['aggregate_s']:.4f}", f"{r['eval_s']:.3f}", f"{peak:.0f}" if peak is not None else "n/a (CPU)")
    console.print(table)
    if "speedup" in result:
        sp = result["speedup"]
        console.print(f"speed-up optimised / reference: train {sp['train_images_per_s']:.2f}x, eval "
                      f"{sp['eval_images_per_s']:.2f}x, whole round {sp['round_time']:.2f}x", highlight=False)
    f = result["flops"]
    console.print(
        f"training {f['train_per_image'] / 1e9:.3f} GFLOP/image (forward {f['forward_per_image'] / 1e9:.3f}, "
        f"ratio {f['train_over_forward']:.2f}); achieved {result['achieved_train_tflops']:.4f} TFLOP/s = "
        f"{result['percent_of_peak']:.3f}% of an assumed {result['peak_tflops_assumed']:.0f} TFLOP/s peak",
        highlight=False,
    )
