"""Terminal output: rich progress on a terminal, plain log lines when output is piped or logged."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# markup off: printed text quotes method specs such as livar[lora=false], which rich would eat as tags
console = Console(stderr=True, markup=False)


class RunProgress:
    """Event handler for ``run_federation``: bars over rounds and clients, or one log line per round."""

    def __init__(self, label: str = "", live: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if live is None else live
        self.label = label
        self.progress: Progress | None = None
        self.rounds_task = self.clients_task = None

    def __enter__(self) -> RunProgress:
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=console, transient=True,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: str, **info: Any) -> None:
        if event == "start":
            from livar_bench.models.sizes import size_note

            spec = info["spec"]  # the input size in use, once the run has started
            (self.progress.console if self.progress is not None else console).print(
                f"{self.label}{spec.backbone}: {size_note(spec.backbone, spec.image_size)}", highlight=False, soft_wrap=True)
            if self.progress is not None:
                done = info["start_round"] - 1
                self.rounds_task = self.progress.add_task(f"{self.label}rounds", total=info["rounds"], completed=done)
                self.clients_task = self.progress.add_task("  clients", total=info["clients"])
        elif event == "client" and self.progress is not None:
            self.progress.advance(self.clients_task)
        elif event == "round":
            m = info["metrics"]
            if self.progress is not None:
                self.progress.advance(self.rounds_task)
                self.progress.reset(self.clients_task)
                self.progress.console.print(f"{self.label}round {info['round']}: acc {m['acc']:.4f}  loss {m['loss']:.4f}")
            else:
                console.print(f"{self.label}round {info['round']}: acc {m['acc']:.4f}  loss {m['loss']:.4f}", highlight=False)
        elif event == "warning":
            console.print(f"{self.label}warning: {info['message']}", highlight=False, soft_wrap=True)
        elif event == "resume":
            console.print(f"{self.label}resuming run {info['run_id']} after round {info['round']}", highlight=False)
        elif event == "locked":
            console.print(f"{self.label}run {info['run_id']} is being run by another process; skipped", highlight=False)
        elif event == "warning":
            console.print(f"warning: {info['message']}", highlight=False, soft_wrap=True)
