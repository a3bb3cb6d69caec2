"""Shared test helper: crashes injected at a (run, round) of a sweep, and a recorder of executor events."""

from __future__ import annotations


class Injected(BaseException):
    """Stands in for a crash (power cut, OOM kill) in the middle of a run: not an Exception, which a
    sweep records as that run's failure and goes on."""


class Recorder:
    """Collects executor events; optionally raises at one (run, round) to simulate a crash."""

    def __init__(self, crash_at: tuple[int, int] | None = None) -> None:
        self.events: list[tuple[str, dict]] = []
        self.crash_at = crash_at
        self.index = -1

    def __call__(self, event: str, **info) -> None:
        self.events.append((event, info))
        if event == "run_start":
            self.index = info["index"]
        if event == "round" and self.crash_at == (self.index, info["round"]):
            raise Injected(f"crash in run {self.index} after round {info['round']}")

    def names(self, event: str) -> list[dict]:
        return [info for name, info in self.events if name == event]
