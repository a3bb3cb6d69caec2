"""Validated experiment settings.

A ``RunSpec`` is the fully resolved description of one federated run. Its ``run_id`` is a short hash of
every field that can change a result, so two runs with the same id are the same experiment and a sweep
can skip runs that are already done. Fields that only say *where* or *how fast* (data root, device,
evaluation batch size) are left out of the hash.

pydantic does the validation: unknown keys, wrong types and out-of-range values become one readable
message each, which is what a hand-written validator would have to reimplement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from livar_bench.digest import json_digest
from livar_bench.errors import BenchError

HEAD_INIT = "timm"  # models.LoraViT.initial_params draws the head as timm does (part of every run id)

# The largest learning rate torch can step with: AdamW's first step size lr / (1 - beta1) = 10 lr (beta1 = 0.9)
# is converted to float32, whose largest value is 3.4028e38 (above 3.4e37 torch raises "value cannot be
# converted to type float without overflow"). Any rate near it diverges at once, which is reported as such.
MAX_LR = 3.4e37

# Fields that do not change what is computed, only where files are or how fast it runs.
NON_IDENTITY_FIELDS = frozenset({"data_root", "device", "eval_batch_size", "cache_dir", "download", "pack"})


class RunSpec(BaseModel):
    """One federated run: data, partition, backbone, local training, method and seed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # inf/nan refused

    # data
    dataset: str = Field("digits", description="Dataset name (`livar-bench ls datasets`).")
    data_root: str | None = Field(None, description="Folder holding the real datasets.")
    cache_dir: str | None = Field(None, description="Where decoded image tensors are cached.")
    download: bool = Field(False, description="Download datasets that torchvision can fetch.")
    max_train_samples: int | None = Field(None, ge=1, description="Seeded subsample of the training set.")
    max_test_samples: int | None = Field(None, ge=1, description="Seeded subsample of the test set.")
    heldout_domains: tuple[str, ...] | None = Field(
        None, description="Domains left out of training and of the pooled test set, evaluated on their own "
        "(split test_heldout; leave-domains-out). Needs a dataset with domains.")
    # partition
    partition: str = Field(
        "dirichlet", description="Partition spec (livar-bench ls partitioners), e.g. iid, shards[per_client=2], "
        "classes[k=2], quantity[dist=powerlaw], balanced_dirichlet, domain; its Dirichlet alpha is `alpha`.")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (label skew; smaller = more skewed); "
                                                "used by partitions that draw from a Dirichlet.")
    num_clients: int = Field(10, ge=1)
    min_client_samples: int = Field(6, ge=1, description="Redraw the partition until every client has this many.")
    participation: float = Field(1.0, gt=0, le=1, description="Fraction of clients sampled per round.")
    val_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="Seeded fraction of each client's training data held out (after partitioning) as a "
        "validation split, evaluated every round (split=val). 0 = none; used by `livar-bench tune`.",
    )
    # backbone
    backbone: str = Field("livar_tiny_vit", description="timm model name or a registered tiny backbone.")
    pretrained: bool = Field(True, description="Load pretrained weights (timm hub or --weights).")
    weights: str | None = Field(None, description="Local weights file (.safetensors/.pth state dict) for the backbone.")
    image_size: int | None = Field(
        None, ge=8, description="Input size, a multiple of the patch size; default: 224 (a tiny backbone's own).")
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    lora_targets: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    client_ranks: tuple[int, ...] | None = Field(
        None, description="LoRA rank of each client, cycled over clients (e.g. 4,8,16); unset = lora_rank for "
        "all. Only methods that handle different ranks accept it (flora, product-space merges).")
    rank_scale: Literal["alpha_over_rank", "constant"] = Field(
        "alpha_over_rank", description="Scale of each client's LoRA update with --client-ranks: alpha / r_k "
        "(alpha_over_rank, PEFT's convention) or alpha / max rank for every client (constant; with alpha = 2 x max "
        "rank this is the FLoRA authors' lora_alpha = 2 r_k).")
    # local training
    rounds: int = Field(5, ge=1)
    local_epochs: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU.")
    # system heterogeneity (client/system.py)
    local_work: str = Field("fixed", description="Local work of each client and round: fixed (--epochs), "
                            "epochs[min=1,max=5] or steps[min=10,max=50] (drawn uniformly per client and round).")
    stragglers: float = Field(0.0, ge=0, le=1, description="Fraction of each round's sampled clients that "
                              "complete only --straggler-work of their local steps.")
    straggler_work: float = Field(0.5, gt=0, le=1, description="Share of its local steps a straggler completes.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Probability that a sampled client does not reply in a "
                           "round (its update never reaches the server).")
    deadline: float | None = Field(None, gt=0, description="The server waits this many step-times of a "
                                   "median-speed device; slower clients do not reply. Unset = no deadline.")
    # method
    method: str = Field("fedavg", description="Method spec, e.g. livar, livar+ccvr, ties[density=0.3].")
    seed: int = Field(0, ge=0)
    # execution only
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    eval_batch_size: int = Field(256, ge=1)
    eval_local: bool = Field(
        False, description="Also evaluate each client's own model on a test subset drawn with its label "
        "distribution (split=test_local: mean and worst-decile accuracy over clients).")
    secure_aggregation: bool = Field(
        False, description="Flower engine only: aggregate the clients' updates with Flower's SecAgg+ (the server "
        "sees their weighted mean only); for methods whose server needs only that sum (ls methods).")
    pack: int | None = Field(
        None, ge=0, description="Clients trained together in one batched step (client/packed.py); "
        "0/1 = off, unset = auto (off on CPU, min(clients, 10) on CUDA). Same results up to rounding.",
    )

    @field_validator("dataset", "backbone")
    @classmethod
    def _lower(cls, value: str) -> str:
        value = value.strip()
        return value if "/" in value or value.startswith(("hf:", "folder:")) else value.lower()

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from livar_bench.data import resolve_name

        # Fail before any model is built, and give aliases (cifar-100) the canonical name and run id.
        return resolve_name(value)  # raises BenchError naming the known datasets

    @field_validator("lr")
    @classmethod
    def _float32_lr(cls, value: float) -> float:
        if value > MAX_LR:
            raise ValueError("at most 3.4e37 (AdamW's first step, 10 x lr, must fit in a float32); a learning rate "
                             "anywhere near it diverges at once: try e.g. --lr 1e-4")
        return value

    @field_validator("alpha")
    @classmethod
    def _drawable_alpha(cls, value: float) -> float:
        from livar_bench.data.partitioners.base import check_alpha

        return check_alpha(value)  # the partitioners' own bound, also where the partition ignores alpha

    _method_spec: Any = PrivateAttr(None)
    _run_id: str | None = PrivateAttr(None)
    _data_identity: dict[str, Any] | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _split_partition(cls, data: Any) -> Any:
        """``partition`` in canonical form, its Dirichlet alpha moved to the ``alpha`` field (one place,
        so `--alpha`, alpha sweeps and the ids of Dirichlet runs stay what they were)."""
        if not isinstance(data, dict) or not isinstance(data.get("partition"), str):
            return data
        from livar_bench.data.partitioners import split_alpha

        form, written = split_alpha(data["partition"])  # raises BenchError naming the scheme and setting
        if written is not None:
            if "alpha" in data and data["alpha"] is not None and float(data["alpha"]) != written:
                raise BenchError(f"partition {data['partition']!r} sets alpha={written:g} but alpha is also "
                                 f"{data['alpha']}; give it once (--alpha or inside the partition spec)")
            data = {**data, "alpha": written}
        return {**data, "partition": form}

    @model_validator(mode="wrap")
    @classmethod
    def _parse_method(cls, data: Any, handler: Any) -> RunSpec:
        """Parse the method spec once: the field holds its canonical string, ``method_spec`` the value."""
        from livar_bench.methods.spec import MethodSpec

        parsed = None
        if isinstance(data, dict) and data.get("method") is not None:
            parsed = data["method"] if isinstance(data["method"], MethodSpec) else MethodSpec.parse(data["method"])
            data = {**data, "method": str(parsed)}  # MethodSpec.parse raises BenchError naming method and key
        model = handler(data)
        model._method_spec = parsed
        model._check_ranks()
        model._check_privacy()
        model._check_secure()
        return model

    @field_validator("heldout_domains")
    @classmethod
    def _heldout(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
        return names or None

    @field_validator("local_work")
    @classmethod
    def _work(cls, value: str) -> str:
        from livar_bench.client.system import parse_work, render_work

        return render_work(parse_work(value))  # raises BenchError naming the setting

    @property
    def system(self) -> Any:
        """The run's system heterogeneity (``client.system.SystemSettings``)."""
        from livar_bench.client.system import SystemSettings

        return SystemSettings(self.local_work, self.stragglers, self.straggler_work, self.dropout, self.deadline)

    @field_validator("client_ranks")
    @classmethod
    def _ranks(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or any(r < 1 for r in value)):
            raise ValueError("every client rank must be at least 1 (e.g. --client-ranks 4,8,16)")
        return value

    @property
    def mixed_ranks(self) -> bool:
        """Whether clients have different LoRA ranks."""
        return self.client_ranks is not None and len(set(self.client_ranks)) > 1

    def _check_ranks(self) -> None:
        """Different client ranks only with a method that can aggregate them."""
        if not self.mixed_ranks:
            return
        from livar_bench.errors import BenchError
        from livar_bench.methods import entries

        if not self.method_spec.components[0].accepts_mixed_ranks():
            able = [e.name for e in entries() if e.kind == "method" and e.cls().accepts_mixed_ranks()]
            able += ["fedavg[space=product]", "ties[space=product]", "task_arithmetic[space=product]", "dare[space=product]",
                     "dare_ties[space=product]"]
            raise BenchError(f"--client-ranks {','.join(map(str, self.client_ranks))} gives clients different LoRA "
                             f"ranks, which {self.method} cannot aggregate (it adds factors of different clients "
                             f"entry by entry); methods that can: {', '.join(dict.fromkeys(able))}")

    def _check_secure(self) -> None:
        """Secure aggregation only for a method whose server needs only the sum of the updates."""
        if not self.secure_aggregation:
            return
        method = self.method_spec.build()
        kind, reason = method.secure_aggregation
        if kind != "sum":
            raise BenchError(f"--secure-aggregation needs a method whose server uses only the sum of the client "
                             f"updates; {self.method} needs each client's contribution ({reason})")
        if self.eval_local:
            raise BenchError("--eval-local needs each client's own model, which secure aggregation hides; drop one")
        if self.system.active:
            raise BenchError("--secure-aggregation runs every sampled client's full work through SecAgg+; system "
                             "heterogeneity (--local-work, --stragglers, --dropout, --deadline) is not simulated "
                             "with it: drop one")
        for stage in method.stages:
            if getattr(stage, "adaptive", False):
                raise BenchError("dp[adaptive=true] needs each client's update norm, which secure aggregation hides; "
                                 "use a fixed clip with --secure-aggregation")

    def _check_privacy(self) -> None:
        """A dp stage's accounting for this run (a target epsilon calibrated, once per setting): an
        unreachable target fails here, before anything is written."""
        if "dp" not in self.method_spec.names:
            return
        from livar_bench.methods.dp import privacy_report

        privacy_report(self.method_spec.build(), self.num_clients, self.participation, self.rounds)

    @property
    def max_rank(self) -> int:
        """The LoRA rank of the shared model: the largest client rank, or lora_rank."""
        return max(self.client_ranks) if self.client_ranks else self.lora_rank

    def client_lora_scale(self, rank: int) -> float:
        """The LoRA scale a client of rank ``rank`` trains with (``rank_scale``)."""
        return self.lora_alpha / (self.max_rank if self.rank_scale == "constant" else rank)

    def client_rank(self, client: int) -> int:
        """Client ``client``'s LoRA rank (``client_ranks`` cycled over clients)."""
        return self.client_ranks[client % len(self.client_ranks)] if self.client_ranks else self.lora_rank

    @property
    def method_spec(self) -> Any:
        """The parsed ``MethodSpec`` (built once per RunSpec: rule files are read once per run)."""
        if self._method_spec is None:
            from livar_bench.methods.spec import MethodSpec

            self._method_spec = MethodSpec.parse(self.method)
        return self._method_spec

    @model_validator(mode="after")
    def _partition_fits_dataset(self) -> RunSpec:
        from livar_bench.data import DATASETS, has_domains
        from livar_bench.data.partitioners.base import no_domains

        known = tuple(d.name for d in DATASETS.values() if d.domains)
        if self.partition_spec.needs_domains and has_domains(self.dataset) is False:
            raise BenchError(no_domains(self.partition_spec.name, self.dataset, known))
        if self.heldout_domains and has_domains(self.dataset) is False:
            raise BenchError(f"--heldout-domains needs a dataset with domains ({', '.join(known)}, or an hf: dataset "
                             f"with a 'domain' column), but {self.dataset} has none")
        return self

    @property
    def partition_spec(self) -> Any:
        """The partitioner (``data.partitioners``) with this run's alpha where it reads one."""
        from livar_bench.data.partitioners import with_alpha

        return with_alpha(self.partition, self.alpha)

    @property
    def partition_label(self) -> str:
        """The full partition spec, alpha included where it is used (``dirichlet[alpha=0.1]``)."""
        from livar_bench.data.partitioners import render

        return render(self.partition_spec)

    @property
    def partition_title(self) -> str:
        """The partition with every setting spelled out, and the data and clients it splits (plots, messages)."""
        from livar_bench.data.partitioners import describe

        return f"{describe(self.partition_spec)} on {self.dataset}, {self.num_clients} clients, seed {self.seed}"

    @model_validator(mode="after")
    def _lora_layers_exist(self) -> RunSpec:
        """Targets other than the default name linear layers of the backbone's blocks (checked on a model
        built on the meta device, before any data is read; the default is checked when the model is built)."""
        if self.lora_targets != type(self).model_fields["lora_targets"].default:
            from livar_bench.models.targets import check_targets

            problem = check_targets(self.backbone, self.lora_targets)
            if problem:
                raise BenchError(problem)
        return self

    @model_validator(mode="after")
    def _whole_patches(self) -> RunSpec:
        from livar_bench.models.sizes import check_image_size

        check_image_size(self.backbone, self.image_size)  # raises BenchError naming sizes that fit
        return self

    @property
    def run_id(self) -> str:
        """Short hash of every field that can change the result (computed once per RunSpec)."""
        if self._run_id is None:
            payload = {k: v for k, v in self.model_dump(mode="json").items() if k not in NON_IDENTITY_FIELDS}
            for optional in ("val_fraction", "eval_local", "client_ranks", "secure_aggregation", "stragglers", "dropout",
                             "deadline", "heldout_domains"):
                if not payload[optional]:  # ids of runs made before they existed
                    payload.pop(optional)
            # ids of runs made before it existed; with equal ranks both rules give alpha / r
            if payload["rank_scale"] == "alpha_over_rank" or not self.mixed_ranks:
                payload.pop("rank_scale")
            if payload["local_work"] == "fixed":
                payload.pop("local_work")
            if "stragglers" not in payload:  # straggler_work has no effect without stragglers
                payload.pop("straggler_work")
            if not self.partition_spec.uses_alpha():  # alpha has no effect on an IID (shards, ...) partition
                payload.pop("alpha")
            digests = self.method_spec.content_digests
            if digests:  # contents of files the method reads (a LIVAR rule), not just their paths
                payload["method_files"] = digests
            # Every run starts from timm's head initialisation since issue 13 (before: nn.Linear's uniform draw):
            # every number changed, so every id did too; results made before are different experiments.
            payload["head_init"] = HEAD_INIT
            recipes = self.method_spec.recipe_versions
            if recipes:  # components whose default behaviour changed (CCVR, TIES): new ids for new numbers
                payload["method_recipes"] = recipes
            from livar_bench.models.identity import id_payload

            payload.update(id_payload(self))  # weights by content; the input size an unset size now means
            payload.update(self.data_identity)  # folder: and cifar10's image copy by content ({} for the rest)
            self._run_id = json_digest(payload)
        return self._run_id

    @property
    def data_identity(self) -> dict[str, Any]:
        """Which files the dataset is read from, where its name alone does not say (``data.identity``):
        a folder's content digest instead of its path. Computed once per RunSpec."""
        if self._data_identity is None:
            from livar_bench.data import LoadOptions, identity

            options = LoadOptions(self.data_root, self.cache_dir, self.download)
            self._data_identity = identity(self.dataset, options)
        return self._data_identity

    def partition_settings(self) -> dict[str, Any]:
        """The settings that decide which client holds which sample (and trains on which)."""
        keys = ("dataset", "max_train_samples", "partition", "alpha", "num_clients", "min_client_samples", "seed")
        uses_alpha = self.partition_spec.uses_alpha()
        payload = {k: getattr(self, k) for k in keys if not (k == "alpha" and not uses_alpha)}
        payload.update(self.data_identity)
        if self.val_fraction:  # the validation carve changes each client's training data
            payload["val_fraction"] = self.val_fraction
        if self.heldout_domains:  # the held-out domains leave the training set before it is partitioned
            payload["heldout_domains"] = list(self.heldout_domains)
        return payload

    @property
    def partition_id(self) -> str:
        """Hash of ``partition_settings()``."""
        return json_digest(self.partition_settings())

    def replace(self, **changes: Any) -> RunSpec:
        """A validated copy with ``changes`` applied (a new partition spec that writes its alpha wins over
        the current alpha)."""
        current = self.model_dump()
        if "partition" in changes and "alpha" not in changes:
            current.pop("alpha")
        return make_spec({**current, **changes})


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, naming the field and what was wrong."""
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        msg = item["msg"].removeprefix("Value error, ")  # a validator's own message says what is wrong
        if item["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif "input" in item and not isinstance(item["input"], dict):
            msg = f"{msg} (got {item['input']!r})"
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def make_spec(values: dict[str, Any], what: str = "run settings") -> RunSpec:
    """Build a RunSpec, turning validation problems into one clear ``BenchError`` (``invalid <what>: ...``)."""
    try:
        return RunSpec(**values)
    except ValidationError as err:
        raise BenchError(f"invalid {what}: {format_validation_error(err)}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear message when the file is missing or malformed."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise BenchError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise BenchError(f"config file {p} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BenchError(f"config file {p} must hold a mapping of settings, not {type(data).__name__}")
    return data
