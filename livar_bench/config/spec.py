"""Validated experiment settings.

A ``RunSpec`` is the fully resolved description of one federated run. Its ``run_id`` is a short hash of
every field that can change a result, so two runs with the same id are the same experiment and a sweep
can skip runs that are already done. Fields that only say *where* or *how fast* (data root, device,
evaluation batch size) are left out of the hash.

pydantic does the validation: unknown keys, wrong types and out-of-range values become one readable
message each, which is what a hand-written validator would have to reimplement.
"""

from __future__ import annotations

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

from livar_bench.config.checks import (
    check_lora_layers,
    check_partition_fits_dataset,
    check_privacy,
    check_ranks,
    check_secure,
)
from livar_bench.config.identity import partition_payload, run_id_payload
from livar_bench.config.loading import format_validation_error
from livar_bench.digest import json_digest
from livar_bench.errors import BenchError

# The largest learning rate torch can step with: AdamW's first step size lr / (1 - beta1) = 10 lr (beta1 = 0.9)
# is converted to float32, whose largest value is 3.4028e38 (above 3.4e37 torch raises "value cannot be
# converted to type float without overflow"). Any rate near it diverges at once, which is reported as such.
MAX_LR = 3.4e37


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
        check_ranks(model)
        check_privacy(model)
        check_secure(model)
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
        check_partition_fits_dataset(self)
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
        check_lora_layers(self)
        return self

    @model_validator(mode="after")
    def _whole_patches(self) -> RunSpec:
        from livar_bench.models.sizes import check_image_size

        check_image_size(self.backbone, self.image_size)  # raises BenchError naming sizes that fit
        return self

    @property
    def run_id(self) -> str:
        """Short hash of every field that can change the result (``config.identity``; computed once)."""
        if self._run_id is None:
            self._run_id = json_digest(run_id_payload(self))
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
        return partition_payload(self)

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


def make_spec(values: dict[str, Any], what: str = "run settings") -> RunSpec:
    """Build a RunSpec, turning validation problems into one clear ``BenchError`` (``invalid <what>: ...``)."""
    try:
        return RunSpec(**values)
    except ValidationError as err:
        raise BenchError(f"invalid {what}: {format_validation_error(err)}") from None
