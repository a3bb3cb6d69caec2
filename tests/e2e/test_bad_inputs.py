"""A corpus of bad inputs: each one exits 2 with exactly one ``error:`` line, no traceback, and leaves the
results folder exactly as it was (here: a folder holding one finished run and its sweep record)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests._cli import assert_user_error, invoke

REPO = Path(__file__).resolve().parents[2]
TINY = ["--backbone", "livar_micro_vit", "--clients", "2", "--rounds", "1", "--epochs", "1", "--lora-rank", "2",
        "--lora-alpha", "2", "--device", "cpu"]
RUN = ["run", "--dataset", "synthetic", *TINY]
SWEEP = ["sweep", "--datasets", "synthetic", "--methods", "fedavg", *TINY]

# (id, arguments after the command's own; OUT is replaced by the results folder, FILES by a folder of inputs)
CASES: list[tuple[str, list[str]]] = [
    # run: settings refused at validation
    ("alpha-inf", [*RUN, "--alpha", "inf"]),
    ("alpha-nan", [*RUN, "--alpha", "nan"]),
    ("alpha-overflow", [*RUN, "--alpha", "1e400"]),
    ("alpha-negative", [*RUN, "--alpha", "-1"]),
    ("alpha-zero", [*RUN, "--alpha", "0"]),
    ("alpha-text", [*RUN, "--alpha", "lots"]),
    ("lr-inf", [*RUN, "--lr", "inf"]),
    ("lr-nan", [*RUN, "--lr", "nan"]),
    ("lr-zero", [*RUN, "--lr", "0"]),
    ("weight-decay-negative", [*RUN, "--weight-decay", "-0.1"]),
    ("weight-decay-inf", [*RUN, "--weight-decay", "inf"]),
    ("lora-alpha-inf", [*RUN, "--lora-alpha", "inf"]),
    ("lora-alpha-zero", [*RUN, "--lora-alpha", "0"]),
    ("participation-above-1", [*RUN, "--participation", "1.5"]),
    ("participation-nan", [*RUN, "--participation", "nan"]),
    ("val-fraction-1", [*RUN, "--val-fraction", "1"]),
    ("val-fraction-negative", [*RUN, "--val-fraction", "-0.2"]),
    ("clients-zero", [*RUN, "--clients", "0"]),
    ("clients-text", [*RUN, "--clients", "ten"]),
    ("clients-float", [*RUN, "--clients", "2.5"]),
    ("rounds-zero", [*RUN, "--rounds", "0"]),
    ("epochs-negative", [*RUN, "--epochs", "-1"]),
    ("batch-size-zero", [*RUN, "--batch-size", "0"]),
    ("lora-rank-zero", [*RUN, "--lora-rank", "0"]),
    ("seed-negative", [*RUN, "--seed", "-1"]),
    ("image-size-tiny", [*RUN, "--image-size", "4"]),
    ("image-size-huge", [*RUN, "--image-size", "100000"]),
    ("max-train-zero", [*RUN, "--max-train-samples", "0"]),
    ("min-client-samples-zero", [*RUN, "--min-client-samples", "0"]),
    ("pack-negative", [*RUN, "--pack", "-1"]),
    ("precision-unknown", [*RUN, "--precision", "fp8"]),
    ("device-unknown", [*RUN, "--device", "tpu"]),
    ("dataset-unknown", ["run", "--dataset", "nosuch", *TINY]),
    ("dataset-empty-hf", ["run", "--dataset", "hf:", *TINY]),
    ("partition-unknown", [*RUN, "--partition", "nosuch"]),
    ("partition-classes-k-zero", [*RUN, "--partition", "classes[k=0]"]),
    ("partition-more-shards-than-samples", [*RUN, "--partition", "shards[per_client=1000]"]),
    ("partition-domains-absent", [*RUN, "--partition", "domain"]),
    ("partition-and-iid", [*RUN, "--iid", "--partition", "shards"]),
    ("partition-alpha-twice", [*RUN, "--alpha", "0.2", "--partition", "dirichlet[alpha=0.1]"]),
    ("partition-setting-unknown", [*RUN, "--partition", "shards[k=2]"]),
    ("heldout-domains-absent", [*RUN, "--heldout-domains", "sketch"]),
    ("local-work-unknown", [*RUN, "--local-work", "often"]),
    ("local-work-range", [*RUN, "--local-work", "epochs[min=3,max=1]"]),
    ("stragglers-above-1", [*RUN, "--stragglers", "1.5"]),
    ("straggler-work-zero", [*RUN, "--straggler-work", "0"]),
    ("dropout-1", [*RUN, "--dropout", "1"]),
    ("deadline-zero", [*RUN, "--deadline", "0"]),
    ("secure-with-dropout", [*RUN, "--secure-aggregation", "--dropout", "0.1"]),
    ("method-unknown", [*RUN, "--method", "nosuch"]),
    ("method-param-out-of-range", [*RUN, "--method", "ties[density=2]"]),
    ("method-param-inf", [*RUN, "--method", "ties[density=inf]"]),
    ("method-param-nan", [*RUN, "--method", "fedprox[mu=nan]"]),
    ("method-param-unknown", [*RUN, "--method", "ties[nosuch=1]"]),
    # differential privacy (issue 22)
    ("dp-sigma-negative", [*RUN, "--method", "fedavg+dp[sigma=-1]"]),
    ("dp-clip-zero", [*RUN, "--method", "fedavg+dp[clip=0]"]),
    ("dp-delta-one", [*RUN, "--method", "fedavg+dp[delta=1]"]),
    ("dp-delta-negative", [*RUN, "--method", "fedavg+dp[delta=-0.1]"]),
    ("dp-epsilon-unreachable", [*RUN, "--method", "livar+dp[epsilon=0.5,stats_sigma=0.5]"]),
    ("dp-central-for-livar", [*RUN, "--method", "livar+dp[noise=central]"]),
    ("method-unbalanced-bracket", [*RUN, "--method", "ties[density=0.2"]),
    ("param-malformed", [*RUN, "--method", "ties", "--param", "density"]),
    ("param-other-method", [*RUN, "--method", "ties", "--param", "fedprox.mu=1"]),
    ("backbone-unknown", ["run", "--dataset", "synthetic", "--backbone", "nosuch_vit", "--device", "cpu"]),
    ("weights-missing", [*RUN, "--weights", "FILES/missing.safetensors"]),
    ("livar-rule-missing", [*RUN, "--method", "livar", "--livar-rule", "FILES/missing.json"]),
    ("config-missing", [*RUN, "--config", "FILES/missing.yaml"]),
    ("config-not-yaml", [*RUN, "--config", "FILES/broken.yaml"]),
    ("config-a-list", [*RUN, "--config", "FILES/list.yaml"]),
    ("config-unknown-key", [*RUN, "--config", "FILES/unknown.yaml"]),
    ("unknown-option", [*RUN, "--bogus", "1"]),
    ("unknown-command", ["frobnicate"]),
    # sweep
    ("sweep-alphas-inf", [*SWEEP, "--alphas", "0.1,inf"]),
    ("sweep-alphas-nan", [*SWEEP, "--alphas", "nan"]),
    ("sweep-alphas-text", [*SWEEP, "--alphas", "0.1,x"]),
    ("sweep-alphas-empty", [*SWEEP, "--alphas", ","]),
    ("sweep-seeds-text", [*SWEEP, "--seeds", "0,one"]),
    ("sweep-seeds-negative", [*SWEEP, "--seeds", "-1"]),
    ("sweep-seeds-twice", [*SWEEP, "--seeds", "0,0"]),
    ("sweep-methods-unknown", ["sweep", "--datasets", "synthetic", "--methods", "fedavg,nosuch", *TINY]),
    ("sweep-no-methods", ["sweep", "--datasets", "synthetic", *TINY]),
    ("sweep-datasets-unknown", ["sweep", "--datasets", "nosuch", "--methods", "fedavg", *TINY]),
    ("sweep-data-missing", ["sweep", "--datasets", "cifar100", "--methods", "fedavg", *TINY]),
    ("sweep-executor-unknown", [*SWEEP, "--executor", "pbs"]),
    ("sweep-partitions-unknown", [*SWEEP, "--partitions", "iid,nosuch"]),
    ("sweep-partition-domains-absent", [*SWEEP, "--partition", "domain"]),
    # partition
    ("partition-cmd-classes-k-zero", ["partition", "--dataset", "synthetic", "--partition", "classes[k=0]"]),
    ("partition-cmd-more-shards", ["partition", "--dataset", "synthetic", "--clients", "2", "--partition",
                                   "shards[per_client=1000]"]),
    ("partition-cmd-domains-absent", ["partition", "--dataset", "synthetic", "--partition", "domain"]),
    ("sweep-rounds-zero", [*SWEEP, "--rounds", "0"]),
    ("sweep-lr-inf", [*SWEEP, "--lr", "inf"]),
    ("sweep-config-clash", [*SWEEP, "--config", "FILES/clash.yaml"]),
    ("sweep-config-unknown-axis", [*SWEEP, "--config", "FILES/axis.yaml"]),
    ("sweep-config-empty-list", [*SWEEP, "--config", "FILES/empty_list.yaml"]),
    ("sweep-config-inf", [*SWEEP, "--config", "FILES/inf.yaml"]),
    ("sweep-config-image-size", [*SWEEP, "--config", "FILES/image_size.yaml"]),
    # reading results
    ("table-format-unknown", ["table", "--format", "docx"]),
    ("table-metric-unknown", ["table", "--metric", "nosuch"]),
    ("table-rows-unknown", ["table", "--rows", "nosuch"]),
    ("table-vs-unknown", ["table", "--vs", "nosuch"]),
    ("table-empty-folder", ["table", "--out", "FILES/empty"]),
    ("plot-metric-unknown", ["plot", "--metric", "nosuch"]),
    ("status-empty-folder", ["status", "--out", "FILES/empty"]),
    ("compare-published-missing", ["compare", "--published", "FILES/missing.csv"]),
    ("compare-published-bad", ["compare", "--published", "FILES/broken.csv"]),
    ("ls-unknown", ["ls", "nosuch"]),
    # folder:<path> datasets (each folder is made by image_folders below)
    ("folder-corrupt-jpeg", ["run", "--dataset", "folder:FILES/corrupt", *TINY]),
    ("folder-truncated-jpeg", ["run", "--dataset", "folder:FILES/truncated", *TINY]),
    ("folder-empty-class", ["run", "--dataset", "folder:FILES/empty_class", *TINY]),
    ("folder-one-class", ["run", "--dataset", "folder:FILES/one_class", *TINY]),
    ("folder-missing-split", ["run", "--dataset", "folder:FILES/missing_split", *TINY]),
    ("folder-class-only-in-test", ["run", "--dataset", "folder:FILES/test_only_class", *TINY]),
    ("folder-unreadable-archive", ["run", "--dataset", "folder:FILES/broken.tar.gz", *TINY]),
    ("folder-nonexistent", ["run", "--dataset", "folder:FILES/nowhere", *TINY]),
    ("folder-empty-path", ["run", "--dataset", "folder:", *TINY]),
    ("sweep-folder-corrupt", ["sweep", "--datasets", "folder:FILES/corrupt", "--methods", "fedavg", *TINY]),
]

BENCH = ["bench", "--backbone", "livar_micro_vit", "--clients", "1", "--samples-per-client", "4", "--eval-samples", "4",
         "--no-reference", "--device", "cpu", "--json"]

# Issue 26 and the odd inputs tried with it: (id, arguments, what the one error line must say). OUT is the
# results folder of the ``folders`` fixture (for table), NEW a folder that must stay absent, FILES as above.
SAYS: list[tuple[str, list[str], list[str]]] = [
    ("table-setting-twice", ["table", "--out", "OUT", "--cols", "alpha,alpha"],
     ["alpha is named twice in --cols", "name each setting once across --rows and --cols"]),
    ("table-setting-in-rows-and-cols", ["table", "--out", "OUT", "--rows", "clients", "--cols", "dataset,num_clients"],
     ["num_clients is named twice in both --rows and --cols (as 'clients' and 'num_clients')"]),
    ("alpha-beyond-bound", [*RUN, "--alpha", "1e308", "--out", "NEW"],
     ["alpha: at most 1e100 (a larger Dirichlet concentration overflows numpy's draw", "or --iid"]),
    ("lora-targets-unknown", [*RUN, "--lora-targets", "nosuch", "--out", "NEW"],
     ["--lora-targets nosuch: livar_micro_vit's blocks have no linear layer nosuch; LoRA can go on attn.qkv, "
      "attn.proj, mlp.fc1, mlp.fc2"]),
    ("lora-targets-empty", [*RUN, "--lora-targets", "", "--out", "NEW"],
     ["--lora-targets '' names no layer", "attn.qkv, attn.proj, mlp.fc1, mlp.fc2"]),
    ("bench-image-size-huge", ["bench", "--image-size", "100000", "--json"],
     ["--image-size 100000: one batch of 256 input images", "use a smaller --image-size"]),
    # further odd inputs that ended in a traceback (or ran when run refuses them)
    ("lr-beyond-float32", [*RUN, "--lr", "1e38", "--out", "NEW"], ["lr: at most 3.4e37", "try e.g. --lr 1e-4"]),
    ("lora-targets-part-unknown", [*SWEEP, "--lora-targets", "attn.qkv,norm1", "--out", "NEW"],
     ["have no linear layer norm1"]),
    ("partition-quantity-overflow", [*RUN, "--partition", "quantity[sigma=1e308]", "--clients", "10", "--out", "NEW"],
     ["sigma=1e+308 drew client size weights beyond the range of a double", "lower sigma"]),
    ("partition-powerlaw-overflow", ["partition", "--dataset", "synthetic", "--partition",
                                     "quantity[dist=powerlaw,exponent=1e-300]", "--out", "NEW"], ["raise exponent"]),
    ("method-empty", [*RUN, "--method", "", "--out", "NEW"], ["empty method spec"]),
    ("partition-cmd-plot-folder-missing", ["partition", "--dataset", "synthetic", "--plot", "FILES/none/x.png",
                                           "--out", "NEW"], ["the folder", "does not exist; create it"]),
    ("out-is-a-file", [*RUN, "--out", "FILES/broken.yaml"], ["Not a directory", "choose another path"]),
    ("bench-classes-zero", [*BENCH, "--classes", "0"], ["--classes and --eval-samples must be at least 1"]),
    ("bench-eval-samples-zero", [*BENCH, "--eval-samples", "0"], ["--eval-samples must be at least 1"]),
    ("bench-lora-rank-zero", [*BENCH, "--lora-rank", "0"], ["invalid bench settings: lora_rank"]),
    ("bench-lora-rank-too-large", [*BENCH, "--lora-rank", "100000"], ["LoRA rank 100000 is larger than layer"]),
    ("bench-lora-alpha-zero", [*BENCH, "--lora-alpha", "0"], ["lora_alpha: Input should be greater than 0"]),
    ("bench-eval-batch-size-zero", [*BENCH, "--eval-batch-size", "0"], ["eval_batch_size"]),
    ("bench-image-size-zero", [*BENCH, "--image-size", "0"], ["image_size: Input should be greater than or equal to 8"]),
    ("bench-peak-tflops-zero", [*BENCH, "--peak-tflops", "0"], ["--peak-tflops 0.0: give the device's peak"]),
    ("bench-peak-tflops-nan", [*BENCH, "--peak-tflops", "nan"], ["--peak-tflops nan"]),
    ("bench-workload-too-large", [*BENCH, "--samples-per-client", "1000000000"],
     ["the synthetic workload (1000000004 images of 16x16 px) would take about", "fewer --clients, --samples-per-client"]),
    ("bench-method-unknown", [*BENCH, "--method", "nosuch"], ["unknown method 'nosuch'"]),
]

INPUTS = {
    "broken.yaml": "rounds: [1, 2\n",
    "list.yaml": "- 1\n- 2\n",
    "unknown.yaml": "nosuch: 1\n",
    "clash.yaml": "grid:\n  seeds: [0, 1]\nbase:\n  seed: 3\n",
    "axis.yaml": "grid:\n  colours: [red]\n",
    "empty_list.yaml": "grid:\n  seeds: []\n",
    "inf.yaml": "base:\n  alpha: .inf\n",
    "image_size.yaml": "base:\n  image_size: 100000\n",
    "broken.csv": "what,is,this\n1,2\n",
}


def image_folders(files: Path) -> None:
    """Broken image folders, one per case (solid PNGs; the broken file named in each)."""
    import numpy as np
    from PIL import Image

    def image(path: Path, colour: int = 0, size: int = 8) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), (colour, 40, 80)).save(path)

    def good(root: Path) -> None:
        for split in ("train", "test"):
            for c, cls in enumerate(("cat", "dog")):
                for k in range(3):
                    image(root / split / cls / f"{k}.png", 10 * c + k)

    good(files / "corrupt")
    (files / "corrupt" / "train" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good(files / "truncated")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(files / "truncated" / "test" / "cat" / "noise.jpg", quality=95)
    data = (files / "truncated" / "test" / "cat" / "noise.jpg").read_bytes()
    (files / "truncated" / "test" / "cat" / "noise.jpg").write_bytes(data[:3000])  # header intact
    good(files / "empty_class")
    (files / "empty_class" / "train" / "eel").mkdir()
    image(files / "one_class" / "cat" / "0.png")
    image(files / "one_class" / "cat" / "1.png", 1)
    good(files / "missing_split")
    for path in sorted((files / "missing_split" / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (files / "missing_split" / "test").rmdir()
    good(files / "test_only_class")
    image(files / "test_only_class" / "test" / "fox" / "0.png")
    (files / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 not a gzip stream")


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under ``folder`` with its mode and content digest."""
    found = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[str(path.relative_to(folder))] = (path.stat().st_mode, digest)
    return found


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A results folder with one finished run and its sweep record, and a folder of input files."""
    out = tmp_path_factory.mktemp("results")
    files = tmp_path_factory.mktemp("inputs")
    for name, text in INPUTS.items():
        (files / name).write_text(text)
    (files / "empty").mkdir()
    image_folders(files)
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["livar-bench", *SWEEP, "--out", str(out)])
    from livar_bench.cli import main

    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    finally:
        mp.undo()
    assert len(list((out / "runs").glob("*/DONE"))) == 1
    return out, files


def test_corpus_is_large_enough():
    assert len(CASES) >= 60 and len({c for c, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c for c, _ in CASES])
def test_bad_input(case, folders, monkeypatch, capsys):
    out, files = folders
    _, args = case
    args = [a.replace("FILES", str(files)) for a in args]
    if not any(a == "--out" for a in args) and args[0] not in ("ls", "frobnicate", "bench"):
        args += ["--out", str(out)]
    before, inputs_before = snapshot(out), snapshot(files)
    capsys.readouterr()
    code, stdout, err = invoke(args, monkeypatch, capsys)
    assert code == 2, (stdout, err)
    assert "Traceback" not in err + stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert snapshot(out) == before
    assert snapshot(files) == inputs_before


@pytest.mark.parametrize("case", SAYS, ids=[c for c, _, _ in SAYS])
def test_bad_input_says_what_to_do(case, folders, tmp_path, monkeypatch, capsys):
    """One ``error:`` line with what to do, exit 2; the results folder, the inputs and NEW stay as they were."""
    out, files = folders
    _, args, needles = case
    new = tmp_path / "new"
    args = [a.replace("FILES", str(files)).replace("OUT", str(out)).replace("NEW", str(new)) for a in args]
    before, inputs_before = snapshot(out), snapshot(files)
    capsys.readouterr()
    code, stdout, err = invoke(args, monkeypatch, capsys)
    assert_user_error(code, err, new, *needles)
    assert "Traceback" not in stdout and [line for line in err.splitlines() if line.strip()] == [err.strip()]
    assert not new.exists()  # not even the folder
    assert snapshot(out) == before and snapshot(files) == inputs_before


def test_ctrl_c_in_a_command_prints_its_line(folders, monkeypatch, capsys):
    """Typer 0.29 turns KeyboardInterrupt into a silent exit 130; the entry point still says what was kept."""
    from livar_bench.store import RunStore

    def interrupted(self, run_id):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "state", interrupted)
    code, _, err = invoke(["status", "--out", str(folders[0])], monkeypatch, capsys)
    assert code == 130
    assert err.strip() == "interrupted; finished runs are kept, and rerunning the same command resumes the rest"


@pytest.mark.slow
def test_ctrl_c_prints_its_line(tmp_path):
    """A real SIGINT to a sweep in its own process: exit 130 and the line, no traceback."""
    code = "from livar_bench.cli import main; main()"
    args = [*SWEEP, "--seeds", "0,1,2,3,4,5,6,7", "--rounds", "50", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIVAR_BENCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "round 1 " in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert "interrupted; finished runs are kept" in rest and "Traceback" not in rest
    shutil.rmtree(tmp_path, ignore_errors=True)
