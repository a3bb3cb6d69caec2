"""Weights & Biases: offline runs under the results folder unless ``WANDB_MODE`` says otherwise.

    default        WANDB_MODE=offline: <out>/wandb/offline-run-<time>-<id>/, upload later with
                   ``wandb sync <out>/wandb/offline-run-*``
    online         WANDB_MODE=online (after ``wandb login``); WANDB_PROJECT (default livar-bench),
                   WANDB_ENTITY, WANDB_DIR as usual

History ``<split>/<metric>`` at step = round; the settings as config (with the tags under ``livar``); a
sweep's runs share a W&B group; run id, partition id, method, dataset and the weights hash as tags; the
run's records and accuracy plot as run files. A resumed run continues the same W&B run id. Offline, W&B
cannot append to an earlier offline run (its files of a killed process may also be cut short), so the
resumed process writes the whole history again and moves the earlier offline folders of that id to
``<out>/wandb/superseded/``: one complete offline run per run remains to sync. Online, W&B resumes
the run itself and only the rounds after its last step are logged.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from livar_bench.experiments.trackers.base import FINISHED, RunInfo


class WandbTracker:
    """One W&B run per livar-bench run (``wandb.init`` with the run's own id, ``resume="allow"`` online)."""

    def __init__(self) -> None:
        self.run: Any = None
        self._start = -1

    def open(self, run: RunInfo, previous: dict[str, Any] | None, save: Callable[[dict[str, Any]], None]) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or "offline"
        root = Path(os.environ.get("WANDB_DIR") or run.out)
        wid = (previous or {}).get("id") or f"{run.run_id}-{secrets.token_hex(3)}"
        offline = mode in ("offline", "dryrun")
        if previous and offline:
            superseded = root / "wandb" / "superseded"
            for folder in sorted((root / "wandb").glob(f"offline-run-*-{wid}")):
                superseded.mkdir(parents=True, exist_ok=True)
                shutil.move(str(folder), str(superseded / folder.name))
        save({"id": wid, "mode": mode})
        root.mkdir(parents=True, exist_ok=True)
        tags = [f"{k}={run.tags[k]}"[:64] for k in ("run_id", "partition_id", "method", "dataset")]
        tags.append(f"weights={run.tags['weights_sha256'][:16]}")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "livar-bench", entity=os.environ.get("WANDB_ENTITY"),
            id=wid, name=run.name, group=run.group, job_type="sweep-run" if run.group else "run",
            config={**run.settings, "livar": run.tags}, tags=tags, dir=str(root), mode=mode,
            resume=None if offline else "allow",
            settings=wandb.Settings(console="off", silent=True, disable_git=True, save_code=False),
        )
        if not offline and self.run.resumed:
            self._start = int(getattr(self.run, "starting_step", 0)) - 1

    def last_step(self) -> int:
        return self._start

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)
        self._start = max(self._start, step)

    def finish(self, status: str, files: Iterable[Path]) -> None:
        import wandb

        folder = Path(self.run.dir) / "livar"  # files in the run's folder are uploaded with the run
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, folder / path.name)
            if path.suffix == ".png":
                self.run.log({f"plots/{path.stem}": wandb.Image(str(path))}, step=max(self._start, 0))
        self.run.finish(exit_code=0 if status == FINISHED else 1)
