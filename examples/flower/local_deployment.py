"""Start and stop a Flower deployment on this machine: one SuperLink and N SuperNodes, on 127.0.0.1 only.

    python local_deployment.py start --nodes 2                # SuperLink on 127.0.0.1:8000, partition ids 0, 1
    python local_deployment.py start --nodes 2 --port 0 \\
        --node-config "data-root='/data'"                      # a free port; settings every node gets
    python local_deployment.py status
    python local_deployment.py stop                           # every process it started, their children too

Each process runs in its own session with its log in ``--dir`` (``superlink.log``, ``supernode-<id>.log``);
``deployment.json`` there records what was started, so ``stop`` finds it again. ``stop`` ends the
SuperNodes first, then the SuperLink, and with them the processes they started (``flower-superexec``,
``flwr-serverapp``, ``flwr-clientapp``): SIGTERM, then SIGKILL for any still there after ``--grace``
seconds. A SuperNode stopped on its own can leave its ``flower-superexec`` child running; this does not.

Only the SuperLink's port is fixed (``--port``, 0 = a free one); the SuperNodes' own runtime ports are
free ones. Runtime dependency installation is off (Flower uses this machine's livar-bench). Needs
flwr (``pip install 'livar-bench[flower]'``) and psutil (a dependency of livar-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"
STATE = "deployment.json"
DEFAULT_DIR = Path("~/.cache/livar-bench/flower-local")


class DeploymentError(Exception):
    """A start or stop that did not work; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def program(name: str) -> str:
    """The path of a Flower command (next to this Python first, then on PATH)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise DeploymentError(f"{name} not found: pip install 'livar-bench[flower]' (into this Python)")
    return found


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(text[-lines:])


def read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(folder / STATE)


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child keeps its own handle
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_listening(proc: subprocess.Popen, port: int, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not accepts(port):
        if proc.poll() is not None:
            raise DeploymentError(f"{what} exited (code {proc.returncode}) before listening on {HOST}:{port}; "
                                  f"its log {log}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise DeploymentError(f"{what} did not listen on {HOST}:{port} within {timeout:g} s; its log {log}:\n"
                                  f"{tail(log)}")
        time.sleep(0.2)


def entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The started processes, SuperNodes first (they are stopped first)."""
    return [*state.get("supernodes", []), *([state["superlink"]] if "superlink" in state else [])]


def alive(entry: dict[str, Any]) -> psutil.Process | None:
    """The recorded process if it still runs and is still the one started (same start time)."""
    try:
        proc = psutil.Process(entry["pid"])
        if abs(proc.create_time() - entry["created"]) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None


def family(state: dict[str, Any]) -> list[psutil.Process]:
    """Every live process of the deployment: the recorded ones, their descendants, and a ``flower-superexec``
    left behind by a recorded process that is gone (it names that process and its port on its command line)."""
    found: dict[int, psutil.Process] = {}
    recorded = entries(state)
    roots = [p for p in (alive(e) for e in recorded) if p is not None]
    marks = {(str(e["pid"]), f"{HOST}:{e['port']}") for e in recorded}
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        named = dict(zip(args, args[1:], strict=False))
        if any("flower-superexec" in a for a in args[:2]) and \
                (named.get("--parent-pid"), named.get("--runtime-api-address")) in marks:
            roots.append(proc)
    for root in roots:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:  # an exited child its parent has not reaped yet
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                continue
    return list(found.values())


def stop(folder: Path, grace: float = 15.0, say=print) -> int:
    """Stop every process of the deployment recorded in ``folder``; returns how many were running."""
    state = read_state(folder)
    if not state:
        say(f"no deployment recorded in {folder}")
        return 0
    procs = family(state)
    for entry in entries(state):  # SuperNodes first, then the SuperLink, each with its session
        proc = alive(entry)
        if proc is not None:
            try:
                os.killpg(entry["pid"], signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
    gone, left = psutil.wait_procs(procs, timeout=grace)
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    _, stuck = psutil.wait_procs(left, timeout=5.0)
    if stuck:
        raise DeploymentError(f"could not stop processes {', '.join(str(p.pid) for p in stuck)}; kill them by pid")
    (folder / STATE).unlink(missing_ok=True)
    killed = f", {len(left)} of them with SIGKILL after {grace:g} s" if left else ""
    say(f"stopped {len(procs)} process(es){killed}; logs kept in {folder}")
    return len(procs)


def flower_config() -> Path:
    """The Flower config file ``flwr run`` reads (``$FLWR_HOME/config.toml``, default ``~/.flwr/config.toml``)."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr") / "config.toml"


def flower_connection(address: str) -> str | None:
    """The name of a SuperLink connection in the Flower config that points at ``address``, if any."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: flwr brings tomli
        import tomli as tomllib

    config = flower_config()
    if not config.is_file():
        return None
    links = tomllib.loads(config.read_text()).get("superlink", {})
    return next((name for name, c in links.items() if isinstance(c, dict) and c.get("address") == address), None)


def start(folder: Path, nodes: int, port: int, node_config: str = "", timeout: float = 60.0, say=print) -> dict:
    """Start a SuperLink and ``nodes`` SuperNodes (partition ids 0 .. nodes - 1); returns the recorded state."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(alive(e) for e in entries(read_state(folder))):
        raise DeploymentError(f"a deployment recorded in {folder} is still running: stop it first "
                              f"(python {Path(__file__).name} stop --dir {folder})")
    if nodes < 1:
        raise DeploymentError("--nodes must be at least 1 (one SuperNode per client)")
    if port and port_taken(port):
        raise DeploymentError(f"port {port} on {HOST} is in use: pass --port N, or --port 0 for a free one")
    port = port or free_port()
    address = f"{HOST}:{port}"
    state: dict[str, Any] = {"dir": str(folder), "address": address, "supernodes": []}
    try:
        log = folder / "superlink.log"
        proc = launch([program("flower-superlink"), "--insecure", "--host", HOST, "--port", str(port),
                       "--disable-runtime-dependency-installation"], log)
        state["superlink"] = {"pid": proc.pid, "created": psutil.Process(proc.pid).create_time(), "port": port,
                              "log": str(log)}
        write_state(folder, state)
        wait_listening(proc, port, log, "the SuperLink", timeout)
        started = []
        for k in range(nodes):
            node_port, log = free_port(), folder / f"supernode-{k}.log"
            config = f"partition-id={k} {node_config}".strip()
            proc = launch([program("flower-supernode"), "--insecure", "--superlink", address, "--host", HOST,
                           "--port", str(node_port), "--node-config", config], log)
            state["supernodes"].append({"partition_id": k, "pid": proc.pid, "port": node_port, "log": str(log),
                                        "created": psutil.Process(proc.pid).create_time()})
            write_state(folder, state)
            started.append((proc, node_port, log, k))
        for proc, node_port, log, k in started:
            wait_listening(proc, node_port, log, f"SuperNode {k}", timeout)
    except BaseException:
        stop(folder, grace=5.0, say=lambda _: None)
        raise
    say(f"SuperLink on {address} (log {folder / 'superlink.log'}); {nodes} SuperNode(s), partition ids "
        f"0 .. {nodes - 1} (logs {folder}/supernode-*.log)")
    name = flower_connection(address)
    if name:
        say(f"run with: flwr run . {name} --stream --run-config \"config='quick.yaml' num-clients={nodes}\"")
    else:
        say(f"add to the Flower config ({flower_config()}):\n\n[superlink.livar-local]\naddress = \"{address}\"\n"
            f"insecure = true\n\nthen: flwr run . livar-local --stream --run-config \"config='quick.yaml' num-clients={nodes}\"")
    say(f"stop with: python {Path(__file__).name} stop --dir {folder}")
    return state


def status(folder: Path, say=print) -> None:
    state = read_state(folder)
    if not state:
        say(f"no deployment recorded in {folder}")
        return
    for entry in entries(state):
        what = f"SuperNode {entry['partition_id']}" if "partition_id" in entry else f"SuperLink {state['address']}"
        say(f"{what}: pid {entry['pid']} {'running' if alive(entry) else 'not running'} (log {entry['log']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state and logs (default {DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, default=2, help="SuperNodes = clients of the run (default 2)")
    parser.add_argument("--port", type=int, default=8000, help="SuperLink port on 127.0.0.1 (default 8000; 0 = free)")
    parser.add_argument("--node-config", default="", help="extra settings for every SuperNode, e.g. \"data-root='/data'\"")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each process may take to listen")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL on stop")
    args = parser.parse_args(argv)
    folder = args.dir.expanduser().resolve()
    try:
        if args.action == "start":
            start(folder, args.nodes, args.port, args.node_config, args.timeout)
        elif args.action == "stop":
            stop(folder, args.grace)
        else:
            status(folder)
    except DeploymentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
