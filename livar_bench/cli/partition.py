"""``livar-bench partition``: draw a partition as a run would, print how heterogeneous it is, plot it.

The partition is saved where runs look for it (``<out>/partitions/<partition_id>.json``, with the plot
beside it as ``.png``), so a later ``run`` or ``sweep`` with the same settings trains on exactly it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli import options as o
from livar_bench.errors import BenchError

# The run options that decide a partition (the rest would be ignored here, so they are not offered).
PARTITION_OPTIONS = ("dataset", "partition", "alpha", "iid", "clients", "min_client_samples", "seed",
                     "max_train_samples", "val_fraction", "data_root", "cache_dir", "download")


@app.command("partition")
@o.run_options(skip=tuple(name for name in o.RUN_OPTIONS if name not in PARTITION_OPTIONS))
def partition(
    config: o.Config = None,
    out: Path = typer.Option(Path("results"), help="Results folder: the partition goes to OUT/partitions/."),
    plot: Path | None = typer.Option(None, help="Where to write the label-distribution plot (PNG). "
                                     "[default: OUT/partitions/<partition_id>.png]"),
    settings: dict | None = None,
) -> None:
    """Draw a partition, print its heterogeneity and plot its label distribution.

    Example: livar-bench partition --dataset digits --partition "shards[per_client=2]" --clients 10
    """
    import numpy as np

    from livar_bench.config import make_spec
    from livar_bench.data.partitioners.measures import MEANINGS
    from livar_bench.data.partitioners.record import save_plot, summary
    from livar_bench.federation import load_run_dataset
    from livar_bench.federation.partitions import obtain_partition
    from livar_bench.store import nothing_left_on_failure

    spec = make_spec(o.spec_values(config, settings or {}))
    if plot is not None and not plot.parent.is_dir():  # before the partition is drawn and saved
        raise BenchError(f"--plot {plot}: the folder {plot.parent} does not exist; create it or give another path")
    bundle = load_run_dataset(spec)
    train = bundle.train
    labels, domains = train.labels.numpy(), None if train.domains is None else train.domains.numpy()
    folder = Path(out) / "partitions"
    with nothing_left_on_failure(out, []):
        drawn, _ = obtain_partition(spec, labels, bundle.num_classes, folder, domains)
        record = summary(spec.partition_spec, drawn, labels, bundle.num_classes, partition_id=spec.partition_id,
                         domains=domains, domain_names=bundle.domain_names)
        shared = folder / f"{spec.partition_id}.png"
        target = save_plot(plot or shared, shared, np.asarray(record["class_counts"]), spec.partition_title,
                           bundle.class_names)
    lines = [f"partition {spec.partition_title}: {len(labels)} training samples (partition id {spec.partition_id}, "
             f"fingerprint {record['fingerprint']})"]
    width = max(len(k) for k in record["measures"])
    for name, value in record["measures"].items():
        text = f"{value:.0f}" if float(value).is_integer() else f"{value:.4f}"
        lines.append(f"  {name:<{width}}  {text:>10}  {MEANINGS[name]}")
    lines.append(f"indices: {folder / f'{spec.partition_id}.json'}")
    lines.append(f"plot: {target}")
    typer.echo("\n".join(lines))  # the report is the command's output: stdout
