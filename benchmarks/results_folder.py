"""Benchmark: `status` and `table` on a results folder of many finished runs.

Writes N finished runs with the project's own run-folder writer (federation/run_folder.py: the files
and DONE digests a real run leaves; metrics rows shaped like a real run's: rounds 0..R of test acc/loss,
train loss and the cost metrics), records them as one sweep, then times
`livar-bench status` and `livar-bench table` in fresh processes: cold (no cache) and warm (cached), and
after 10 more runs finish (incremental).

    python benchmarks/results_folder.py --runs 10000 --out /tmp/big-results
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LIVAR_BENCH_FSYNC", "0")  # generating the folder only; the timed commands read

COSTS = ("train_s", "aggregate_s", "eval_s", "train_images_per_s", "wall_s", "upload_bytes_per_client",
         "upload_signal_bytes_per_client", "download_bytes_per_client", "peak_host_rss_bytes")


def specs(n: int) -> list:
    from livar_bench.config import make_spec

    methods = ("fedavg", "fedprox", "ccvr", "livar", "livar+ccvr", "ties", "task_arithmetic", "livar[lora=false]")
    out = []
    seed = 0
    while len(out) < n:
        for alpha in (0.05, 0.1, 0.5, 1.0):
            for method in methods:
                out.append(make_spec({"dataset": "digits", "method": method, "alpha": alpha, "seed": seed,
                                      "rounds": 5, "num_clients": 10}))
        seed += 1
    return out[:n]


def write_runs(out: Path, todo: list) -> None:
    import pandas as pd

    from livar_bench.federation.run_folder import RunFolder, tidy_rows
    from livar_bench.store import RunStore

    store = RunStore(out)
    for i, spec in enumerate(todo):
        folder = RunFolder(store, spec.run_id)
        folder.write_records(spec, {}, {"livar_bench": "bench", "host": "bench", "torch_threads": 1},
                             {"partition_id": spec.partition_id, "clients": spec.num_clients})
        rows = []
        for r in range(spec.rounds + 1):
            acc = 0.5 + 0.05 * r + 0.001 * (i % 17)
            rows += tidy_rows(spec, r, "test", {"acc": acc, "loss": 2.0 - acc})
            if r:
                rows += tidy_rows(spec, r, "train", {"loss": 1.5 - 0.1 * r})
                rows += tidy_rows(spec, r, "cost", {k: float(r) for k in COSTS})
        frame = pd.DataFrame(rows)
        frame.insert(frame.columns.get_loc("alpha") + 1, "tv_distance", 0.3)
        frame.insert(frame.columns.get_loc("alpha") + 2, "class_coverage", 0.7)
        folder.write_metrics(frame)
        folder.commit()


def timed(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from livar_bench.cli import main; main()", *args],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/livar-bench-big-results"))
    parser.add_argument("--reuse", action="store_true", help="Time an existing folder written by this script.")
    args = parser.parse_args()
    from livar_bench.experiments.sweep import SweepConfig, write_manifest

    all_specs = specs(args.runs + 10)
    first, extra = all_specs[: args.runs], all_specs[args.runs:]
    if args.reuse:
        for spec in extra:
            shutil.rmtree(args.out / "runs" / spec.run_id, ignore_errors=True)
        for folder in ("cache", "tables"):
            shutil.rmtree(args.out / folder, ignore_errors=True)
    else:
        shutil.rmtree(args.out, ignore_errors=True)
        start = time.perf_counter()
        write_runs(args.out, first)
        write_manifest(SweepConfig(name="bench"), first, args.out)
        print(f"wrote {args.runs} finished runs in {time.perf_counter() - start:.1f} s", flush=True)
    baseline = timed(["ls", "methods"])
    print(f"CLI start-up (ls methods): {baseline:.2f} s", flush=True)
    for label, command in (("status, cold", ["status"]), ("status, warm", ["status"]),
                           ("table, cold", ["table"]), ("table, warm", ["table"])):
        print(f"{label}: {timed([*command, '--out', str(args.out)]):.2f} s", flush=True)
    write_runs(args.out, extra)
    print(f"table after 10 more runs (incremental): {timed(['table', '--out', str(args.out)]):.2f} s", flush=True)
    print(f"status after 10 more runs: {timed(['status', '--out', str(args.out)]):.2f} s", flush=True)


if __name__ == "__main__":
    main()
