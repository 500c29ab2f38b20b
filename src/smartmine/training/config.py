"""Run configuration: nested dataclasses loaded from YAML, validated before any work starts.

Unknown or mistyped keys are errors that name the key and suggest the nearest valid one; ``--set section.key=value``
overrides are parsed as YAML scalars (``--set train.epochs=3``, ``--set mining.k=null``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smartmine._registry import did_you_mean


class ConfigError(ValueError):
    """A configuration problem; the message names the key (``section.key``) and, where known, the file."""


@dataclass
class DataConfig:
    """What to train and evaluate on."""

    name: str = "glyphs"
    """A registered dataset: glyphs | digits | cub100 | cub200 | cars196 | sop | inshop | folder | csv, or one added
    with ``smartmine.data.register_dataset``."""
    root: str | None = None
    """Dataset root folder (or CSV file for ``csv``); not needed for glyphs and digits."""
    options: dict = field(default_factory=dict)
    """Extra keyword arguments passed to the dataset loader (e.g. glyphs' ``variants_per_face``)."""
    image_size: int = 224
    """Crop size for photo datasets (resize is ``image_size * 8 / 7``, as 256 → 224)."""
    augment: bool = True
    """Random resized crop + flip for photos at training time (small grayscale data: light shifts)."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the main process; bit-for-bit repeatable on CPU)."""
    on_bad_image: str = "fail"
    """fail: stop naming the file; skip: drop unreadable images when the dataset is built and count them."""
    eval_batch_size: int = 256
    """Batch size of the embedding passes (evaluation and smart mining)."""
    decode_once: bool = False
    """Photos: decode every image once when the run starts and keep it in memory (``uint8``, short side resized to
    ``image_size·8/7``, centre square: 196 KB per image at 224), then crop, flip and normalise whole batches on the
    training device. Saves the per-epoch JPEG decoding that starves a GPU; training crops come from the centre square
    (README, "Training on your own images"). Small in-memory datasets (glyphs, digits) always work this way."""
    holdout_classes: int = 0
    """Training classes set aside, never trained on, and scored after every epoch (metrics ``holdout_*``; a
    validation set that does not look at the test classes); drawn from the seed among classes with two images. 0: none.
    ``train.best_metric: holdout_map@r`` then picks best.pt on them, ``mining.holdout_patience`` steers mining."""


@dataclass
class ModelConfig:
    """Backbone + linear embedding head + L2 normalisation."""

    backbone: str = "small_cnn"
    """small_cnn | googlenet | resnet50 | efficientnet_lite0 | timm:<name>."""
    pretrained: bool = False
    """Load ImageNet weights (efficientnet_lite0 ships them offline; others need cached weights)."""
    embedding_dim: int = 64
    freeze_bn: bool | None = None
    """Keep batch-norm layers of the backbone in inference mode with frozen parameters. ``null`` (default): frozen
    when ``pretrained`` (fine-tuning with batch statistics of small metric-learning batches wrecked the ImageNet
    features on cub100: docs/BENCHMARKS.md, "Session 11"), trained otherwise. Read configs hold the resolved value."""
    head_init: str = "auto"
    """random (PyTorch's default ``nn.Linear`` initialisation) | pca (the top ``embedding_dim`` principal directions
    of up to ``head_init_images`` training images' backbone features, test-time transforms; keeps what a pretrained
    backbone already knows from the first step) | auto (default: pca when ``pretrained``, else random; read configs
    hold the resolved value). A fresh run only: a resumed run takes the head from its checkpoint."""
    head_init_images: int = 10000
    """Training images (a seeded random subset when there are more) whose features fit the PCA head."""
    options: dict = field(default_factory=dict)
    """Extra keyword arguments for the backbone builder (e.g. small_cnn's ``in_channels``)."""


@dataclass
class LossConfig:
    """The training objective: a main loss plus an optional global loss term."""

    name: str = "ratio_triplet"
    """ratio_triplet (Smart Mining Eq. 2) | triplet (difference hinge) | margin (Sampling Matters) | contrastive."""
    margin: float = 0.2
    """Triplet margin m; α of the margin loss."""
    contrastive_margin: float = 1.0
    """α of the contrastive loss (negative pairs closer than α are pushed apart; unit vectors lie within 2)."""
    squared: bool = False
    """Squared distances in the difference-hinge triplet loss (FaceNet form)."""
    global_weight: float = 1.0
    """Weight w_g of the global loss (0 disables it)."""
    global_lambda: float = 1.0
    global_t: float = 0.01
    beta: float = 1.2
    """Initial boundary β of the margin loss."""
    nu: float = 0.0
    learn_beta: bool = True
    beta_per_class: bool = True
    """One β per training class (else a single scalar)."""
    beta_lr: float = 0.1
    """Learning rate of β (SGD, momentum 0.9, no weight decay, as the reference code)."""


@dataclass
class MiningConfig:
    """How triplets are chosen."""

    strategy: str = "smart"
    """smart (dataset-wide, Algorithm 1) | random | semihard | hard | distance_weighted (in-batch)."""
    classes_per_batch: int = 16
    """P of the P×K batches of in-batch strategies."""
    samples_per_class: int = 4
    """K of the P×K batches of in-batch strategies."""
    graph_batches: bool = False
    """Compose P×K batches from classes that the k-NN graph says are confused with each other (ours)."""
    cutoff: float = 0.5
    nonzero_loss_cutoff: float = 1.4
    max_triplets: int | None = None
    """Cap on triplets per batch for in-batch miners (None: no cap)."""
    index: str = "auto"
    """Neighbour index of smart mining: auto (default: exact search up to 200,000 training points on the CPU, and on a
    GPU at any size; FANNG above) | exact | fanng | faiss. The presets name ``fanng`` (the paper's system)."""
    index_options: dict = field(default_factory=dict)
    """Keyword arguments of the index, e.g. ``{search_budget: 1024, max_degree: 40}`` for fanng or
    ``{ef_search: 128}`` for faiss (checked against the index's constructor before any work starts)."""
    k: int | None = None
    """Neighbours per point (None: max(64, 2 × the largest training class))."""
    kappa: float | str = "auto"
    """κ₀ (initial, or fixed when adaptive is false); ``auto`` (default): the steered controller starts where the
    planned share of anchors has a valid negative (the t_a quantile); a fixed κ or the legacy controller need a
    number (the paper: 16)."""
    adaptive: bool = True
    controller: str = "steered"
    """steered (ours: fits only epochs that mined their plan, keeps κ where mining can fill it) | legacy (the paper's
    controller and a fixed FANNG budget, exactly as before the steered controller)."""
    warm_start: bool = True
    """Start each mined epoch's index from the previous epoch's neighbour lists where the index can (FANNG's
    NN-descent; a drift check falls back to a cold build). The lists are saved in checkpoints: resume stays exact."""
    list_recall_sample: int = 256
    """Points whose neighbour lists are checked against exact search every mined epoch (0: off)."""
    target_error: float = 0.5
    window: int = 5
    kappa_min: float = 1.0
    """κ floor (below 1 admits negatives inside the nearest-positive radius)."""
    kappa_max: float = 256.0
    kappa_max_change: float = 4.0
    """Steered controller: the largest factor by which one epoch's fit may move κ (>= 2)."""
    warmup_epochs: int = 2
    """Epochs of random triplets before smart mining starts."""
    mined_fraction: float = 0.5
    """Fraction p of each epoch's triplets that are mined (the rest random)."""
    min_share_scale: float = 0.25
    """Steered controller: when the training error stays above the target even at the largest κ that fills the plan,
    the planned mined share shrinks (down to this factor of ``mined_fraction``) so that κ can rise; 1 never shrinks."""
    cautious_start: bool = True
    """Steered controller with ``kappa: auto``: the first mined epoch mines only ``min_share_scale`` of the plan, at
    the κ that fills that much (easier triplets), and the plan grows once its error is at or below the target; false
    starts with the whole plan at the hardest κ that fills it (sessions 4-7). docs/ARCHITECTURE.md, "Smart mining"."""
    selection: str = "semihard"
    """semihard (default, ours: random listed positive, nearest negative with D²(a,n) > κ·D²(a,p); κ = 1 is semi-hard
    over the training set) | strict (Algorithm 1, the paper) | margin_aware (ours: keep mining triplets that still
    carry loss). docs/ARCHITECTURE.md, "Smart mining"; the choice is measured in docs/BENCHMARKS.md, "Mining study"."""
    error_counts: str = "mined"
    """Which triplets the controller's training error counts: mined (default: what κ acts on) | all (the paper)."""
    embedding_source: str = "fresh"
    """fresh (an inference pass over the training set) | cache (last epoch's training forward passes, ours)."""
    triplets_per_batch: int = 32
    triplets_per_epoch: int | None = None
    """Triplets per smart-mining epoch (None: one per training image)."""
    batch_mining: str = "auto"
    """Smart mining: also mine every smart batch in the batch with this in-batch miner (semihard | distance_weighted |
    hard | random; its options as for mining.strategy) and train on those triplets after the plan's: every same-class
    pair among the batch's images, with a negative from the batch. They never count towards the training error.
    none: the plan's triplets only (the paper's system); auto (default): semihard with mining.strategy=smart, nothing
    for the in-batch strategies. docs/ARCHITECTURE.md, "Smart mining"; measured in docs/BENCHMARKS.md."""
    holdout_patience: int = 0
    """Smart mining: halve the planned mined share after this many mined epochs without a new best held-out MAP@R
    (needs ``data.holdout_classes``); the share never grows back. 0 (default): off."""
    extra_positives: int = 64
    """Smart mining: other images of the anchor's class appended to every neighbour list before selection (the whole
    class when it is smaller), so that mined positives are not only the nearest ones (default 64; 0: the lists only,
    as before session 10). docs/ARCHITECTURE.md, "Smart mining"; measured in docs/BENCHMARKS.md, "Session 10"."""
    extra_negatives: int = 64
    """Smart mining: uniformly random other-class images appended to every neighbour list, so that an anchor whose
    listed negatives stop short of its κ bound can still be mined (default 64; 0: the lists only)."""


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: str = "adamw"
    """sgd | adam | adamw."""
    lr: float = 1e-3
    head_lr_mult: float = 10.0
    """Learning-rate multiplier of the embedding head (×10 in Smart Mining)."""
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "none"
    """none | step (multiply by gamma every step_size epochs) | multistep (at milestones)."""
    step_size: int = 3
    gamma: float = 0.5
    milestones: list = field(default_factory=list)
    grad_clip: float | None = None
    """Clip the gradient norm to this value (None: no clipping)."""


@dataclass
class TrainConfig:
    """The loop."""

    epochs: int = 8
    eval_every: int = 1
    """Evaluate on the test split every N epochs (and always after the last)."""
    amp: bool = False
    """Mixed precision (bfloat16 autocast) on CUDA; ignored on CPU."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    on_nonfinite: str = "stop"
    """stop: a NaN/inf loss stops the run naming batch and term; skip: skip the batch and count it."""
    best_metric: str = "recall@1"
    """Metric of the row that picks best.pt: a test metric (recall@1, map@r, nmi, ...; only epochs that evaluate) or
    its held-out form (holdout_map@r, ...; every epoch, needs data.holdout_classes)."""
    progress: bool = True


@dataclass
class EvalConfig:
    ks: list = field(default_factory=lambda: [1, 2, 4, 8])
    compute_nmi: bool = True
    kmeans_backend: str = "sklearn"
    """k-means of NMI: sklearn | faiss (much faster with thousands of classes; needs the faiss extra)."""
    raw_pixel_baseline: bool = False
    """Also evaluate the raw pixels of the test split (written to baseline.json)."""
    untrained_baseline: bool = False
    """Also evaluate the model before its first step (the pretrained backbone with its initial head) on the test
    split (written to untrained.json): what fine-tuning has to beat. Costs one embedding pass of the test split."""


@dataclass
class RunConfig:
    """A whole run: ``smartmine train CONFIG`` reads one of these from YAML."""

    seed: int = 0
    run_dir: str = "runs/run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def registered_choices() -> dict[str, tuple[str, ...]]:
    """The keys whose valid values are whatever is registered (so a registered dataset, loss, miner or index is
    accepted without editing this module)."""
    from smartmine.data.registry import available_datasets
    from smartmine.training.registry import INDEXES, LOSSES, MINERS

    return {
        "data.name": tuple(available_datasets()),
        "loss.name": LOSSES.names(),
        "mining.strategy": ("smart", *MINERS.names()),
        "mining.batch_mining": ("auto", "none", *MINERS.names()),
        "mining.index": ("auto", *INDEXES.names()),
    }


CHOICES: dict[str, tuple[str, ...]] = {
    "data.on_bad_image": ("fail", "skip"),
    "model.head_init": ("auto", "random", "pca"),
    "eval.kmeans_backend": ("sklearn", "faiss"),
    "mining.selection": ("strict", "margin_aware", "semihard"),
    "mining.controller": ("steered", "legacy"),
    "mining.error_counts": ("all", "mined"),
    "mining.embedding_source": ("fresh", "cache"),
    "optim.optimizer": ("sgd", "adam", "adamw"),
    "optim.schedule": ("none", "step", "multistep"),
    "train.on_nonfinite": ("stop", "skip"),
}

POSITIVE: tuple[str, ...] = (
    "data.image_size", "data.eval_batch_size", "model.embedding_dim", "model.head_init_images",
    "mining.classes_per_batch", "mining.triplets_per_batch", "mining.window", "optim.lr", "optim.step_size",
    "train.epochs", "train.eval_every",
    "mining.kappa_max", "mining.kappa_min",
)
NON_NEGATIVE: tuple[str, ...] = (
    "data.num_workers", "mining.warmup_epochs", "loss.margin", "loss.global_weight", "optim.weight_decay",
    "optim.head_lr_mult", "loss.nu", "loss.contrastive_margin", "mining.list_recall_sample", "data.holdout_classes",
    "mining.holdout_patience", "mining.extra_positives", "mining.extra_negatives",
)
FRACTIONS: tuple[str, ...] = ("mining.mined_fraction", "mining.target_error", "optim.momentum")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(key: str, valid: list[str]) -> str:
    return did_you_mean(key, valid, cutoff=0.5) or f" (valid keys: {', '.join(sorted(valid))})"


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotated type ``tp``; ints are accepted for floats, and so is a string in
    scientific notation without a dot (``1e-5``, which YAML reads as a string)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-5" (no dot) as a string; a user who writes it means the number.
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, list | tuple):
            return list(value)
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - schema bug


def _from_dict(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in raw.items():
        where = f"{prefix}{key}"
        if key not in types_:
            raise ConfigError(f"unknown key '{where}'{_suggest(str(key), list(types_))}")
        tp = types_[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value if value is not None else {}, f"{where}.")
        else:
            kwargs[key] = _coerce(value, tp, where)
    return cls(**kwargs)


def _get(cfg: RunConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: RunConfig, *, check_paths: bool = True) -> RunConfig:
    """Check value ranges and choices; raise :class:`ConfigError` naming the key.

    ``check_paths=False`` skips the check that ``data.root`` exists (reading the config of a finished run whose
    data has moved, e.g. for a report).
    """
    for key, choices in {**registered_choices(), **CHOICES}.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key}: must be positive, got {_get(cfg, key)}")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {_get(cfg, key)}")
    for key in FRACTIONS:
        if not 0.0 <= _get(cfg, key) <= 1.0:
            raise ConfigError(f"{key}: must lie in [0, 1], got {_get(cfg, key)}")
    # Fine-tuning defaults that follow model.pretrained, resolved here so that a run folder's config.yaml (and the
    # check that a resume uses the same config) records what the run did.
    if cfg.model.freeze_bn is None:
        cfg.model.freeze_bn = cfg.model.pretrained
    if cfg.model.head_init == "auto":
        cfg.model.head_init = "pca" if cfg.model.pretrained else "random"
    m = cfg.mining
    if cfg.data.holdout_classes == 1:
        raise ConfigError("data.holdout_classes: must be 0 (none) or >= 2 (retrieval needs two classes), got 1")
    if m.holdout_patience and not (m.strategy == "smart" and cfg.data.holdout_classes):
        raise ConfigError(
            "mining.holdout_patience: needs mining.strategy=smart and data.holdout_classes >= 2 "
            f"(got strategy {m.strategy!r}, holdout_classes {cfg.data.holdout_classes})"
        )
    if m.batch_mining not in ("auto", "none") and m.strategy != "smart":
        raise ConfigError(f"mining.batch_mining: needs mining.strategy=smart (got {m.strategy!r}); in-batch "
                          f"strategies mine their batches already")
    if cfg.train.best_metric.startswith("holdout_") and not cfg.data.holdout_classes:
        raise ConfigError(f"train.best_metric: '{cfg.train.best_metric}' needs data.holdout_classes >= 2")
    if not 0.0 < m.min_share_scale <= 1.0:
        raise ConfigError(f"mining.min_share_scale: must lie in (0, 1], got {m.min_share_scale}")
    if m.samples_per_class < 2:
        raise ConfigError(f"mining.samples_per_class: must be >= 2 to form positive pairs, got {m.samples_per_class}")
    if isinstance(m.kappa, str) and m.kappa != "auto":
        raise ConfigError(f"mining.kappa: expected a number > 0 or 'auto', got '{m.kappa}'")
    if not isinstance(m.kappa, str) and m.kappa <= 0:
        raise ConfigError(f"mining.kappa: must be positive (or 'auto'), got {m.kappa}")
    if m.kappa == "auto" and not (m.adaptive and m.controller == "steered"):
        raise ConfigError("mining.kappa: 'auto' needs mining.adaptive=true and mining.controller=steered")
    if not (math.isfinite(m.kappa_max_change) and m.kappa_max_change >= 2.0):
        raise ConfigError(f"mining.kappa_max_change: must be a finite number >= 2, got {m.kappa_max_change}")
    if m.kappa_min > m.kappa_max:
        raise ConfigError(f"mining.kappa_min ({m.kappa_min}) exceeds mining.kappa_max ({m.kappa_max})")
    for key, wants_faiss in (
        ("mining.index", cfg.mining.strategy == "smart" and cfg.mining.index == "faiss"),
        ("eval.kmeans_backend", cfg.eval.compute_nmi and cfg.eval.kmeans_backend == "faiss"),
    ):
        if wants_faiss and importlib.util.find_spec("faiss") is None:
            raise ConfigError(f"{key}: 'faiss' needs the faiss package: pip install 'smartmine[faiss]'")
    if cfg.mining.index_options:
        from smartmine.training.registry import INDEXES

        if cfg.mining.index == "auto":
            raise ConfigError(
                "mining.index_options: need a named mining.index (exact, fanng or faiss); 'auto' picks one by "
                "training-set size, so options for one of them could not apply"
            )

        try:
            INDEXES.get(cfg.mining.index).check(cfg.mining.index_options)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if cfg.mining.k is not None and cfg.mining.k < 1:
        raise ConfigError(f"mining.k: must be >= 1 or null, got {cfg.mining.k}")
    if cfg.mining.triplets_per_epoch is not None and cfg.mining.triplets_per_epoch < 1:
        raise ConfigError(f"mining.triplets_per_epoch: must be >= 1 or null, got {cfg.mining.triplets_per_epoch}")
    if cfg.optim.grad_clip is not None and cfg.optim.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip: must be positive or null, got {cfg.optim.grad_clip}")
    if not cfg.eval.ks or any((not isinstance(k, int)) or isinstance(k, bool) or k < 1 for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks: expected a non-empty list of positive integers, got {cfg.eval.ks}")
    from smartmine.models.backbones import backbone_builder

    try:  # the name and model.options against the registered builder, before any data is loaded
        backbone_builder(cfg.model.backbone, cfg.model.options)
    except ValueError as exc:
        key = "model.options" if str(exc).startswith("options:") else "model.backbone"
        raise ConfigError(f"{key}: {str(exc).split(': ', 1)[1]}") from None
    from smartmine.data.registry import check_dataset_options, get_dataset_spec

    spec = get_dataset_spec(cfg.data.name)
    reads_files = spec.needs_root
    if reads_files and not cfg.data.root:
        raise ConfigError(f"data.root: dataset '{cfg.data.name}' needs a root path")
    if check_paths and cfg.data.root and reads_files and not Path(cfg.data.root).expanduser().exists():
        raise ConfigError(f"data.root: '{cfg.data.root}' does not exist")
    try:
        check_dataset_options(spec, cfg.data.options)
    except ValueError as exc:
        raise ConfigError(f"data.options.{exc}") from None
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value in YAML syntax) into ``(["section", "key"], value)``."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({exc})") from exc
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of the raw mapping with ``--set`` overrides applied (validated later with the whole config)."""
    out = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def config_from_dict(
    raw: dict | None, overrides: list[str] | tuple[str, ...] = (), *, check_paths: bool = True
) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a mapping plus ``--set`` overrides."""
    merged = apply_overrides(raw or {}, list(overrides))
    return validate(_from_dict(RunConfig, merged, ""), check_paths=check_paths)


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, check_paths: bool = True
) -> RunConfig:
    """Read a YAML config file, apply overrides, validate. Errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    try:
        return config_from_dict(raw, overrides, check_paths=check_paths)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def config_to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (for YAML dumps and checkpoints)."""
    return dataclasses.asdict(cfg)


LEGACY_VALUES: dict[str, Any] = {"model.freeze_bn": False, "model.head_init": "random"}
"""Keys whose default does not describe what runs did before the key existed: pretrained runs before session 11
trained the backbone's batch norm and started the head at random."""


def absent_key_values() -> dict[str, Any]:
    """``{"section.key": value}``: what a run whose saved config lacks a key (written before the key existed) ran
    with: the key's default, or :data:`LEGACY_VALUES`. Lets such a run resume when nothing it did changes."""
    from smartmine.training.checkpoint import flatten_config

    return {**flatten_config(config_to_dict(RunConfig())), **LEGACY_VALUES}


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
