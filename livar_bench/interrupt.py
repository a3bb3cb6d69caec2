"""Ctrl-C that is never lost.

Python delivers SIGINT as a KeyboardInterrupt raised wherever the main thread happens to be. When that is
inside a finaliser or a callback whose exceptions Python ignores (a ``__del__``, a weakref or GC callback),
the interrupt is printed as "Exception ignored" and the program carries on: a sweep then ran to its end and
exited 0 after a real Ctrl-C (seen once in CI's ``test_ctrl_c_prints_its_line``). The handler installed here
also records the interrupt, and the round loop calls :func:`check` at every round, so a swallowed one is
raised again at the next round boundary.
"""

from __future__ import annotations

import signal
import threading

_interrupted = threading.Event()


def _handler(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def install() -> None:
    """Record every SIGINT as well as raising it (main thread only; elsewhere Python refuses handlers)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is \
            signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived, even one that an ignored-exception context swallowed."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
