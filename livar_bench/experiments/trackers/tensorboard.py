"""TensorBoard: event files under the results folder, one run folder per run, a sweep's runs side by side.

    <out>/tensorboard/<sweep or "runs">/<dataset>-a<alpha>-s<seed>-<method>-<run_id>/events.out.tfevents.*

Scalars ``<split>/<metric>`` at step = round; the settings, tags and records as text; the settings as
HParams (the HParams dashboard compares a sweep's runs); the run's accuracy plot as an image. A resumed
run writes a new event file into the same folder and logs only the rounds the folder lacks (read back
with TensorBoard's own event-file loader), so TensorBoard, tbparse and EventAccumulator see each round once.
``LIVAR_BENCH_TENSORBOARD_DIR`` puts the folders elsewhere. View: ``tensorboard --logdir <out>/tensorboard``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from livar_bench.experiments.trackers.base import FINISHED, RunInfo, flat

# logged last in each round: its presence in an event file means the whole round was written
MARKER = "test/acc"


class TensorBoardTracker:
    """One ``SummaryWriter`` per run; flushed after every round, so a killed process loses nothing logged."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.logdir: Path | None = None
        self._last = -1

    def open(self, run: RunInfo, previous: dict[str, Any] | None, save: Callable[[dict[str, Any]], None]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        if previous and Path(previous.get("logdir", "")).is_dir():
            self.logdir = Path(previous["logdir"])
            self._last = last_round(self.logdir)
        else:
            root = Path(os.environ.get("LIVAR_BENCH_TENSORBOARD_DIR") or run.out / "tensorboard")
            base = root / re.sub(r"[^A-Za-z0-9._+=-]+", "_", run.group or "runs") / run.slug
            self.logdir, n = base, 1
            while self.logdir.exists():  # a --force rerun of a finished run is a new TensorBoard run
                n += 1
                self.logdir = base.with_name(f"{base.name}-{n}")
        save({"logdir": str(self.logdir)})
        # a large queue and no timed flush: events reach the file only at our flush, one round at a time
        self.writer = SummaryWriter(str(self.logdir), max_queue=100_000, flush_secs=10**6)
        if not previous:
            from torch.utils.tensorboard.summary import hparams

            exp, ssi, _ = hparams(flat(run.settings), {MARKER: 0.0})
            self.writer.file_writer.add_summary(exp)
            self.writer.file_writer.add_summary(ssi)
            self.writer.add_text("settings", _code(run.settings), 0)
            self.writer.add_text("tags", "\n".join(f"- **{k}**: `{v}`" for k, v in run.tags.items()), 0)
            self.writer.flush()

    def last_step(self) -> int:
        return self._last

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in sorted(values.items(), key=lambda kv: kv[0] == MARKER):
            self.writer.add_scalar(key, value, step)
        self.writer.flush()
        self._last = max(self._last, step)

    def finish(self, status: str, files: Iterable[Path]) -> None:
        import numpy as np
        from PIL import Image

        for path in files:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    self.writer.add_image(f"plots/{path.stem}", np.asarray(image.convert("RGB")), max(self._last, 0),
                                          dataformats="HWC")
            elif path.suffix == ".json":
                self.writer.add_text(f"records/{path.name}", _code(json.loads(path.read_text())), max(self._last, 0))
        if status == FINISHED:
            from torch.utils.tensorboard.summary import hparams

            _, _, sei = hparams({"status": "finished"}, {MARKER: 0.0})
            self.writer.file_writer.add_summary(sei)
        self.writer.close()


def _code(data: Any) -> str:
    return "```\n" + json.dumps(data, indent=2, sort_keys=True, default=str) + "\n```"


def last_round(logdir: Path) -> int:
    """The last round whose marker scalar is in the folder's event files (-1: none)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    last = -1
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and any(v.tag == MARKER for v in event.summary.value):
                last = max(last, int(event.step))
    return last
