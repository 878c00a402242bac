"""The run config: typed, frozen dataclasses. The schema *is* the documentation of every key.

Loaded with omegaconf (YAML + `key=value` overrides + interpolation), then validated by
`schema.build`, which rejects unknown keys with the nearest valid one and checks ranges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from simclr.config.backbone import check_backbone
from simclr.config.files import check_name, read_yaml, resolve_config
from simclr.config.methods import MethodConfig
from simclr.config.schema import ConfigError, FieldError, build, to_dict

POSITIVE_INT = {"range": (1, None)}
EVAL_PROTOCOLS = ("knn", "linear", "diagnostics")  # simclr evaluate --protocol, ablation `protocols`
LABELLED_PROTOCOLS = ("knn", "linear")  # fit on labelled training images (diagnostics reads the test split)
# trainer.loggers short names -> Lightning logger classes (any other Logger: its full class path)
LOGGERS = {"csv": "CSVLogger", "tensorboard": "TensorBoardLogger", "mlflow": "MLFlowLogger", "wandb": "WandbLogger",
           "comet": "CometLogger", "neptune": "NeptuneLogger"}
NON_NEGATIVE = {"range": (0.0, None)}
STREAM_EVAL_PER_CLASS = 100
HOLDOUT_FRACTION = 0.2  # of each class of a flat ImageFolder tree, held out as its test split
# data keys that only the streamed loader reads; the in-memory loader refuses them rather than ignore them
STREAM_ONLY = ("num_workers", "decode_device", "stream_eval_per_class")


@dataclass(frozen=True)
class DataConfig:
    name: Literal["cifar10", "cifar100", "fashion_mnist", "stl10", "imagefolder", "digits"] = "cifar10"
    path: str | None = field(default=None, metadata={"help": "dataset folder or archive; not needed for digits"})
    train_split: str = field(default="train", metadata={"help": "stl10: train, unlabeled or train+unlabeled"})
    test_split: str = field(default="test", metadata={
        "help": "ImageFolder trees/archives: the folder holding the test split (ImageNet's is 'val')"})
    train_per_class: int | None = field(default=None, metadata={"range": (1, None), "help": "seeded subset"})
    val_per_class: int = field(default=50, metadata={"range": (0, None),
                               "help": "held out from train for the kNN monitor; never the test set"})
    test_per_class: int | None = field(default=None, metadata={"range": (1, None)})
    holdout_fraction: float = field(default=HOLDOUT_FRACTION, metadata={
        "range": (0.0, 0.9), "help": "a flat ImageFolder tree (<class>/<image>, no train/ and test/ folders): the "
                                     "share of each class held out as the test split (floor per class, fixed seed; "
                                     "pretraining and the probes never see it); 0 refuses such a tree"})
    image_size: int | None = field(default=None, metadata={"range": (4, 1024), "help": "resize images to this side"})
    batch_size: int = field(default=256, metadata={"range": (2, None), "help": "per device"})
    cache_dir: str | None = None
    loader: Literal["memory", "stream"] = field(default="memory", metadata={
        "help": "memory: decode the dataset once into one uint8 tensor (small data); stream: decode+resize each "
                "batch in DataLoader workers from an ImageFolder tree or .tar shards, WebDataset's included (data "
                "larger than memory)"})
    num_workers: int | None = field(default=None, metadata={
        "range": (0, 256), "help": "with loader=stream: decoding processes per device; null: one per CPU core beyond "
                                   "the first of each device's share, at most 8 (1 on 2 cores); 0: in the main process"})
    decode_device: Literal["cpu", "cuda"] = field(default="cpu", metadata={
        "help": "with loader=stream: cpu decodes+resizes in the workers; cuda: workers only read the files and the "
                "module decodes each batch on the model's GPU (nvJPEG) and resizes it there"})
    stream_eval_per_class: int = field(default=STREAM_EVAL_PER_CLASS, metadata={
        "range": (1, None), "help": "with loader=stream: labelled train images per class decoded into memory as "
                                    "the kNN monitor's bank and the evaluation's train set"})

    def __post_init__(self):
        if self.name != "digits" and not self.path:
            raise FieldError("path", f"required for dataset '{self.name}' (only 'digits' ships with scikit-learn).")
        if self.test_split in self.train_split.split("+"):
            raise FieldError("test_split", f"'{self.test_split}' is also the training split (data.train_split); "
                                           "testing on training images would overstate every score.")
        if self.test_split != "test" and self.name not in ("imagefolder", "cifar10", "cifar100"):
            raise FieldError("test_split", f"names a folder of an ImageFolder tree; dataset '{self.name}' has "
                                           "a fixed test split (leave it at 'test').")
        if self.holdout_fraction != HOLDOUT_FRACTION and self.name not in ("imagefolder", "cifar10", "cifar100"):
            raise FieldError("holdout_fraction", f"{self.holdout_fraction} would be ignored: it holds out the test "
                                                 f"split of a flat ImageFolder tree; dataset '{self.name}' has a fixed "
                                                 "test split. Drop the key.")
        if self.loader == "stream" and self.name not in ("imagefolder", "cifar10", "cifar100"):
            raise FieldError("loader", f"'stream' reads ImageFolder trees and .tar shards; dataset '{self.name}' "
                                       "is read whole (use loader=memory).")
        if self.decode_device == "cuda" and self.loader != "stream":
            raise FieldError("decode_device", "'cuda' decodes streamed batches (data.loader=stream); the in-memory path "
                                              "decodes once on the CPU and caches the result. Use cpu.")
        if self.loader == "memory" and self.num_workers is not None:
            raise FieldError("num_workers", f"{self.num_workers} would be ignored: decoding processes serve "
                                            "data.loader=stream; the in-memory loader decodes once and batches from "
                                            "that tensor. Drop the key, or set data.loader=stream.")
        if self.loader == "memory" and self.stream_eval_per_class != STREAM_EVAL_PER_CLASS:
            raise FieldError("stream_eval_per_class", f"{self.stream_eval_per_class} would be ignored: it sizes the "
                             "streamed loader's in-memory evaluation set; with data.loader=memory every train "
                             "image is evaluated (subset with data.train_per_class). Drop the key.")
        if self.loader == "stream" and self.image_size is None:
            raise FieldError("image_size", "required with loader=stream: every batch is resized to it in the workers.")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field(default="resnet18", metadata={"help": "small_cnn, resnet18, resnet34, resnet50, or "
                          "timm:<name> for any timm model (pip install timm), built untrained with num_classes=0"})
    cifar_stem: bool = field(default=True, metadata={"help": "3x3 conv, no max-pool (for 32x32 inputs); "
                             "resnet18/34/50 only"})
    width: int = field(default=64, metadata={"range": (4, 1024), "help": "small_cnn base channels; small_cnn only"})
    # bounded: a typo such as 10**11 units would otherwise fail deep in torch's allocator
    head_hidden_dim: int = field(default=2048, metadata={"range": (1, 65536)})
    head_out_dim: int = field(default=128, metadata={"range": (1, 65536)})
    head_layers: int = field(default=2, metadata={"range": (1, 4)})
    head_batch_norm: bool = True

    def __post_init__(self):
        check_backbone(self.backbone)


@dataclass(frozen=True)
class LossConfig:
    temperature: float = field(default=0.5, metadata={"range": (1e-3, 10.0), "help": "NT-Xent's (method simclr); "
                               "the other methods' losses are set under method.<name>"})
    gather: bool = field(default=True, metadata={"help": "cross-device terms over all devices (differentiable "
                         "all-gather): SimCLR's negatives, MoCo v3's keys, VICReg's variance and covariance"})


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["lars", "sgd", "adamw"] = "lars"
    lr: float = field(default=1.0, metadata={"range": (0.0, 100.0), "help": "base lr, scaled by batch/256"})
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    weight_decay: float = field(default=1e-6, metadata={"range": (0.0, 1.0)})
    momentum: float = field(default=0.9, metadata={"range": (0.0, 1.0)})
    trust_coefficient: float = field(default=1e-3, metadata={"range": (0.0, 1.0), "help": "LARS eta"})
    warmup_epochs: float = field(default=10.0, metadata=NON_NEGATIVE)
    min_lr_ratio: float = field(default=0.0, metadata={"range": (0.0, 1.0), "help": "cosine floor / peak lr"})
    probe_lr: float = field(default=0.1, metadata={"range": (0.0, 100.0), "help": "online linear probe (SGD)"})


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = field(default=100, metadata=POSITIVE_INT)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = field(default=1, metadata=POSITIVE_INT)
    num_nodes: int = field(default=1, metadata=POSITIVE_INT)
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = field(default="auto", metadata={
        "help": "auto: bf16-mixed on a GPU that supports bf16 and on a CPU with native bf16 (avx512_bf16/amx_bf16), "
                "else 32; resolved when the run starts, and config.yaml records the resolved value"})
    channels_last: bool | Literal["auto"] = field(default="auto", metadata={
        "help": "backbone and views in NHWC; auto: true on a GPU and wherever precision resolves to bf16-mixed"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the backbone"})
    compile_augment: bool = field(default=False, metadata={"help": "torch.compile each op's pixel work "
                                  "(sampling stays eager: same draws); large win on CPU, ~10 s compile per op"})
    sync_batchnorm: bool = field(default=False, metadata={"help": "synchronise BN statistics across devices"})
    accumulate_grad_batches: int = field(default=1, metadata={"range": (1, None), "help":
                                         "must be 1 with a contrastive loss (see __post_init__)"})
    knn_monitor_every: int = field(default=1, metadata={"range": (0, None), "help": "epochs; 0 disables"})
    checkpoint_every_n_steps: int = field(default=0, metadata={
        "range": (0, None), "help": "also write checkpoints/last.ckpt every N training steps, mid-epoch, so a "
                                    "preempted run loses at most N steps (0: at epoch ends only)"})
    log_every_n_steps: int = field(default=10, metadata=POSITIVE_INT)
    progress_bar: bool = True
    limit_train_batches: int | None = field(default=None, metadata={"range": (1, None), "help": "for smoke runs"})
    loggers: tuple[str, ...] = field(default=("csv", "tensorboard"), metadata={"help": "Lightning loggers: "
                                     f"{', '.join(LOGGERS)} or a Logger class path (package.module.Class)"})
    logger_args: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "per logger, keyword "
                                                   "arguments for its class, e.g. mlflow: {tracking_uri: ...}"})

    def __post_init__(self):
        for i, name in enumerate(self.loggers):
            if name not in LOGGERS and "." not in name:
                raise FieldError(f"loggers[{i}]", f"'{name}' is not a logger; valid: {', '.join(LOGGERS)} or a "
                                 "Logger class path such as pytorch_lightning.loggers.CSVLogger.")
        if len(set(self.loggers)) != len(self.loggers):
            raise FieldError("loggers", f"{list(self.loggers)} names a logger twice.")
        for name in self.logger_args:
            if name not in self.loggers:
                raise FieldError(f"logger_args.{name}", f"'{name}' is not in trainer.loggers {list(self.loggers)}; "
                                 "its arguments would be ignored.")
        if self.accumulate_grad_batches != 1:
            raise FieldError("accumulate_grad_batches",
                             f"{self.accumulate_grad_batches} would compute NT-Xent inside each micro-batch, so each "
                             "loss sees fewer negatives than the effective batch — a different method, not a memory "
                             "trick. Use 1 and raise data.batch_size or trainer.devices instead.")


@dataclass(frozen=True)
class EvalConfig:
    knn_k: tuple[int, ...] = field(default=(200, 20), metadata={"range": (1, None)})
    knn_temperature: float = field(default=0.1, metadata={"range": (1e-4, 10.0)})
    monitor_k: int = field(default=20, metadata={"range": (1, None), "help": "k of the in-training kNN monitor"})


@dataclass(frozen=True)
class RunConfig:
    name: str = "simclr"
    seed: int = field(default=0, metadata={"range": (0, 2**31 - 1)})
    output_dir: str = "runs"
    policy: str = field(default="simclr_cifar", metadata={"help": "policy YAML path or a shipped policy name"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        try:
            check_name(self.name, "name")
        except ConfigError as e:
            raise FieldError("name", str(e).split(": ", 1)[1]) from None


def _merged(base, overrides: list[str] | tuple[str, ...], where: str) -> RunConfig:
    """omegaconf `base` + `dotted.key=value` overrides -> validated RunConfig; errors name `where`."""
    try:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}': expected key=value, e.g. trainer.max_epochs=5.")
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {e}".split("\n")[0]) from None
    return build(RunConfig, raw)


def _override_keys(overrides) -> list[str]:
    return [item.split("=", 1)[0].strip() for item in overrides if "=" in item]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                stored: bool = False) -> RunConfig:
    """YAML file + `dotted.key=value` overrides -> validated, frozen RunConfig.

    An error about a key set on the command line names the override, not the file (the file is not at fault).
    `stored`: the file is a run directory's config.yaml, written by simclr (see `as_stored`).
    """
    base = OmegaConf.create({})
    if path is not None:
        path = path if stored else resolve_config(path)
        raw = read_yaml(path, "config file")
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}: a run config is a mapping of keys (name, data, model, ...), "
                              f"got a {type(raw).__name__}.")
        try:
            base = OmegaConf.create(as_stored(raw) if stored and raw else raw or {})
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: {e}".split("\n")[0]) from None
    try:
        return _merged(base, overrides, str(path) if path else "overrides")
    except ConfigError as e:
        msg, key = str(e), str(e).split(":", 1)[0]
        if any(key == k or key.startswith(f"{k}.") or key.startswith(f"{k}[") for k in _override_keys(overrides)):
            raise ConfigError(f"command-line override {msg}") from None
        raise ConfigError(f"{path}: {msg}" if path and not msg.startswith(str(path)) else msg) from None


def override_config(cfg: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """An existing config with `dotted.key=value` overrides applied, validated afresh. Overriding data.loader
    resets the old loader's own keys (STREAM_ONLY) to their defaults unless the overrides set them too: a
    streamed run evaluated with data.loader=memory does not carry its decode workers into a loader without any."""
    base = to_dict(cfg)
    if "data.loader" in _override_keys(overrides):
        base["data"] = {k: v for k, v in base["data"].items() if k not in STREAM_ONLY}
    return _merged(OmegaConf.create(base), overrides, "overrides")


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))


def data_section(raw) -> dict:
    """The `data` mapping of a raw (recorded or written) config, {} where there is none."""
    data = raw.get("data") if isinstance(raw, dict) else None
    return data if isinstance(data, dict) else {}


def as_stored(raw: dict) -> dict:
    """A config that simclr itself recorded (config.yaml, a checkpoint, an ablation's spec record), read by
    today's schema. Runs recorded before the in-memory loader refused stream-only keys carry their defaults of
    then (num_workers: 2), which that loader never read; they are dropped (their defaults apply), so such runs
    still evaluate and resume. decode_device stays: it was refused with that loader from the start, and a
    recorded 'cuda' there is damage to be reported, not a default to replace."""
    data = data_section(raw)
    if not data or data.get("loader", "memory") != "memory":
        return raw
    return {**raw, "data": {k: v for k, v in data.items() if k not in ("num_workers", "stream_eval_per_class")}}


def config_from_dict(raw: dict) -> RunConfig:
    """A config simclr recorded (a checkpoint's hyper-parameters) -> RunConfig."""
    return build(RunConfig, as_stored(raw))
