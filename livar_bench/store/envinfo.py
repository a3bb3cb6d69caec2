"""The environment record of a run: versions, device, host, git sha, threads.
"""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from livar_bench.resources import available_cpus


def environment(device: str) -> dict[str, Any]:
    """Versions, device and git sha recorded with every run."""
    import peft
    import timm
    import torch

    import livar_bench

    info: dict[str, Any] = {
        "livar_bench": livar_bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu",
        "git_sha": _git_sha(),
        "cpus_available": available_cpus(),
        "torch_threads": torch.get_num_threads(),
    }
    return info


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
