"""Digest-checked tensor and pickle files: checkpoints, the round-1 cache, the results-folder index.

Each file carries a SHA-256 of its payload in a header; a reader verifies it and raises ``DamagedFile``
(or, for checkpoints, sets the file aside and returns None) when it does not match.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from livar_bench.store.atomic import DamagedFile, _Sink, atomic_file, set_aside, write_bytes

MAGIC = b"livar-bench tensors v1 sha256="
_HEADER = len(MAGIC) + 64 + 1


class _HashingSink:
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


class _Window(io.RawIOBase):
    """A read-only view of a file from ``offset`` on (torch.load reads the payload after the header)."""

    def __init__(self, fh: Any, offset: int) -> None:
        self.fh, self.offset = fh, offset
        fh.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.fh.readinto(buffer)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.fh.seek(pos + self.offset if whence == 0 else pos, whence) - self.offset

    def tell(self) -> int:
        return self.fh.tell() - self.offset


def save_tensors(path: Path, payload: Any) -> None:
    """``torch.save`` the payload atomically behind a header holding its SHA-256."""
    import torch

    with atomic_file(path) as sink:
        sink.write(MAGIC + b"0" * 64 + b"\n")
        hashing = _HashingSink(sink)
        torch.save(payload, hashing)
        sink.flush()
        sink.fh.seek(len(MAGIC))
        sink.write(hashing.hash.hexdigest().encode())


def load_tensors(path: Path, map_location: Any = "cpu") -> Any:
    """Read a file written by ``save_tensors`` after checking its digest.

    Raises:
        DamagedFile: truncated, garbage, or a payload whose digest does not match.
        OSError: the file cannot be read.
    """
    import torch

    with open(path, "rb") as fh:
        head = fh.read(_HEADER)
        if not head.startswith(MAGIC) or len(head) < _HEADER:
            raise DamagedFile("no livar-bench header: truncated or not written by livar-bench")
        expected = head[len(MAGIC):-1].decode("ascii", "replace")
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        if digest.hexdigest() != expected:
            raise DamagedFile("checksum mismatch: truncated or overwritten")
        try:
            return torch.load(io.BufferedReader(_Window(fh, _HEADER)), map_location=map_location,
                              weights_only=False)  # our own file, digest checked
        except Exception as err:  # noqa: BLE001 (any unpickling failure means the same: damaged)
            raise DamagedFile(f"unreadable ({type(err).__name__})") from None


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict | None:
    """The checkpoint dict at ``path``, or None when there is none or it is damaged.

    A damaged checkpoint (truncated, garbage, wrong digest, not a dict) is set aside with one warning
    line, and the run restarts from round 0.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        try:
            payload = load_tensors(path, map_location)
        except DamagedFile as err:
            payload = _legacy_checkpoint(path, map_location, err)
        if not isinstance(payload, dict):
            raise DamagedFile(f"holds a {type(payload).__name__}, not a checkpoint")
    except DamagedFile as err:
        set_aside(path, str(err), "the run restarts from round 0")
        return None
    return payload


def _legacy_checkpoint(path: Path, map_location: Any, err: DamagedFile) -> Any:
    """A checkpoint written before checkpoints carried a digest (a plain torch file), if it loads."""
    import torch

    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) == MAGIC:
            raise err  # ours, and damaged
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception:  # noqa: BLE001 (truncated, garbage: damaged)
        raise err from None


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically with its digest (see ``load_checkpoint``)."""
    save_tensors(Path(path), payload)


PICKLE_MAGIC = b"livar-bench pickle v1 sha256="


def save_pickle(path: Path, obj: Any) -> None:
    """Pickle ``obj`` atomically behind a header holding the payload's SHA-256 (our own index files)."""
    import pickle

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, PICKLE_MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def load_pickle(path: Path) -> Any:
    """Read a ``save_pickle`` file; raises DamagedFile when its digest or content is wrong."""
    import pickle

    raw = Path(path).read_bytes()
    head = len(PICKLE_MAGIC) + 65
    if not raw.startswith(PICKLE_MAGIC) or len(raw) < head:
        raise DamagedFile("no livar-bench header")
    if hashlib.sha256(raw[head:]).hexdigest().encode() != raw[len(PICKLE_MAGIC):head - 1]:
        raise DamagedFile("checksum mismatch")
    try:
        return pickle.loads(raw[head:])  # noqa: S301 (our own file, digest checked)
    except Exception as err:  # noqa: BLE001
        raise DamagedFile(f"unreadable ({type(err).__name__})") from None
