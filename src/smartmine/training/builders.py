"""Turn a :class:`RunConfig` into the objects of a run: datasets, model, loss, miner, optimisers, schedules."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from smartmine.training.batch_source import BatchSource, Loader, RecordMined
from smartmine.training.config import ConfigError, RunConfig
from smartmine.training.distributed import DistInfo
from smartmine.training.errors import TrainingError
from smartmine.training.registry import INDEXES, LOSSES, MINERS

logger = logging.getLogger("smartmine.training")

DEFAULT_BATCH_MINING = "semihard"
"""What ``mining.batch_mining: auto`` means for smart mining (docs/BENCHMARKS.md, "Smart batches mined in the
batch")."""


@dataclass
class Datasets:
    train: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    train_eval: torch.utils.data.Dataset
    """The training split with test-time transforms (the fresh embedding pass of smart mining)."""
    in_channels: int
    train_batch_transform: Callable | None = None
    """Applied by the trainer to whole training batches on the device (in-memory images: small ones, or photos with
    ``data.decode_once``)."""
    eval_batch_transform: Callable | None = None
    """Applied to whole batches of every embedding pass (in-memory images)."""
    holdout: torch.utils.data.Dataset | None = None
    """The training classes set aside by ``data.holdout_classes`` (test-time transforms), or ``None``."""


def prepare_split(cfg: RunConfig, dataset, *, train: bool) -> Callable | None:
    """Give ``dataset`` its per-image transform and return the batch transform that goes with it (or ``None``).

    Photos get the photo preset per image (resize ``image_size·8/7`` → crop ``image_size``; random resized crop and
    flip when training with ``data.augment``). Small in-memory images stay raw ``[0, 1]`` tensors per image (their
    fast path) and are normalised and augmented per batch, which is several times faster on a CPU.
    """
    from smartmine.data.batch_transforms import SmallBatchTransform
    from smartmine.data.transforms import photo_transform

    d = cfg.data
    if dataset.kind == "small":
        dataset.transform = None
        return SmallBatchTransform(augment=train and d.augment)
    dataset.transform = photo_transform(
        train and d.augment, resize=int(round(d.image_size * 8 / 7)), crop=d.image_size
    )
    return None


def in_channels(dataset_name: str) -> int:
    """Image channels the model sees for a registered dataset: 1 for small grayscale data, 3 for photos."""
    from smartmine.data.registry import get_dataset_spec

    return 1 if get_dataset_spec(dataset_name).kind == "small" else 3


def build_datasets(cfg: RunConfig) -> Datasets:
    """Load the train and test splits with the transforms the config asks for."""
    from smartmine.data import load_dataset

    d = cfg.data
    common = dict(root=d.root, seed=cfg.seed, on_bad_image=d.on_bad_image, **d.options)
    train = load_dataset(d.name, split="train", **common)
    test = load_dataset(d.name, split="test", **common)
    train_tf = prepare_split(cfg, train, train=True)
    # The same images with test-time transforms, for the embedding pass of smart mining.
    train_eval = copy.copy(train)
    eval_tf = prepare_split(cfg, train_eval, train=False)
    prepare_split(cfg, test, train=False)
    if d.decode_once and train.kind != "small":
        train, train_eval, test, train_tf, eval_tf = decode_once(cfg, train, test)
    holdout = None
    if d.holdout_classes:
        train, train_eval, holdout = split_holdout(cfg, train, train_eval)
    return Datasets(
        train=train,
        test=test,
        train_eval=train_eval,
        in_channels=in_channels(d.name),
        train_batch_transform=train_tf,
        eval_batch_transform=eval_tf,
        holdout=holdout,
    )


def decode_once(cfg: RunConfig, train, test):
    """``data.decode_once``: the photo splits decoded once into memory (``uint8`` squares of side
    ``image_size·8/7``), cropped, flipped and normalised per batch on the device (:mod:`smartmine.data.decoded`).

    Returns ``(train, train_eval, test, train_batch_transform, eval_batch_transform)``; ``train`` and ``train_eval``
    share one copy of the pixels.
    """
    from smartmine.data.decoded import DecodedImages, PhotoBatchTransform, decode_all, decoded_bytes

    d = cfg.data
    side = int(round(d.image_size * 8 / 7))
    logger.info(
        "data.decode_once: decoding %d + %d images at %d px (%.2f GB in memory)",
        len(train), len(test), side, decoded_bytes(len(train) + len(test), side) / 1e9,
    )  # fmt: skip
    pixels = decode_all(train, side, workers=d.num_workers)
    decoded_train = DecodedImages(train, side, pixels=pixels)
    decoded_train_eval = DecodedImages(train, side, pixels=pixels)
    decoded_test = DecodedImages(test, side, workers=d.num_workers)
    train_tf = PhotoBatchTransform(d.image_size, augment=d.augment)
    return decoded_train, decoded_train_eval, decoded_test, train_tf, PhotoBatchTransform(d.image_size)


def split_holdout(cfg: RunConfig, *datasets):
    """Each of ``datasets`` (the training split, any transforms) without the classes ``data.holdout_classes`` sets
    aside, then the held-out rows of the last one: ``(*kept, held_out)``.

    Raises:
        TrainingError: the training split cannot spare that many classes (the message names the option).
    """
    from smartmine.data.splits import holdout_rows
    from smartmine.data.subset import RowSubset

    try:
        held = holdout_rows(datasets[0].labels, cfg.data.holdout_classes, cfg.seed)
    except ValueError as exc:
        raise TrainingError(f"data.{exc} in the training split of '{cfg.data.name}'") from None
    kept = [RowSubset(ds, np.flatnonzero(~held), split=ds.split) for ds in datasets]
    return (*kept, RowSubset(datasets[-1], np.flatnonzero(held), split="holdout"))


def check_against_data(cfg: RunConfig, train_labels: np.ndarray) -> None:
    """Refuse, with :class:`TrainingError`, a config that the training split cannot serve (too few classes with two
    images for a metric, for P, or ``mining.k`` not below the training-set size)."""
    m = cfg.mining
    counts = np.bincount(train_labels)
    eligible = int((counts >= 2).sum())
    if eligible < 2:
        raise TrainingError(
            f"training split of '{cfg.data.name}' has {eligible} class(es) with two or more images; "
            "metric learning needs at least two"
        )
    if m.strategy != "smart" and m.classes_per_batch > eligible:
        raise TrainingError(
            f"mining.classes_per_batch={m.classes_per_batch} exceeds the {eligible} training classes "
            "that have two or more images"
        )
    n = len(train_labels)
    if m.k is not None and m.k >= n:
        raise TrainingError(f"mining.k={m.k} must be below the training-set size {n}")


def build_model(cfg: RunConfig, in_channels: int) -> torch.nn.Module:
    from smartmine.models import build_embedder

    options = dict(cfg.model.options)
    if cfg.model.backbone == "small_cnn":
        options.setdefault("in_channels", in_channels)
    return build_embedder(
        cfg.model.backbone,
        embedding_dim=cfg.model.embedding_dim,
        pretrained=cfg.model.pretrained,
        freeze_bn=cfg.model.freeze_bn,
        **options,
    )


def build_loss(cfg: RunConfig, num_classes: int) -> torch.nn.Module:
    """The weighted sum that is optimised: the ``loss.name`` loss (the main term, which answers ``active``) plus the
    global loss when ``loss.global_weight > 0``."""
    from smartmine.losses import GlobalLoss, WeightedSumLoss

    lc = cfg.loss
    terms = {lc.name: (LOSSES.get(lc.name)(lc, num_classes), 1.0)}
    if lc.global_weight > 0:
        terms["global"] = (GlobalLoss(lam=lc.global_lambda, t=lc.global_t), lc.global_weight)
    return WeightedSumLoss(terms, main=lc.name)


def build_in_batch_miner(cfg: RunConfig, seed: int):
    """The ``mining.strategy`` in-batch miner, seeded with ``seed``."""
    if cfg.mining.strategy not in MINERS:
        raise ConfigError(f"mining.strategy: '{cfg.mining.strategy}' is not an in-batch strategy")
    return MINERS.get(cfg.mining.strategy)(cfg.mining, seed)


def build_batch_miner_factory(cfg: RunConfig):
    """``factory(seed)`` building the in-batch miner that ``mining.batch_mining`` adds to every smart batch (``auto``:
    :data:`DEFAULT_BATCH_MINING`), or ``None`` for ``none``."""
    name = DEFAULT_BATCH_MINING if cfg.mining.batch_mining == "auto" else cfg.mining.batch_mining
    return None if name == "none" else functools.partial(MINERS.get(name), cfg.mining)


AUTO_EXACT_MAX_POINTS = 200_000
"""``mining.index: auto`` mines with exact search up to this many training points on a CPU, with FANNG above. On this
project's 2-core CPU (64-d, k = 64, overlapping classes), with the points moved between epochs as far as a training
epoch moves embeddings (the drift check's share 0.71-0.76, as in the stored training runs), exact search took 10.2 s
at 100k, 21.3 s at 150k and 38.1 s at 200k, against 13.5 / 24.4 / 35.1 s for a warm-started FANNG epoch at recall
0.960 / 0.946 / 0.937 and 21 / 40 / 66 s for the cold first one: over ten mined epochs the two break even at 200k,
where exact search still gives the true lists (docs/BENCHMARKS.md, "Session 15: which index mines fastest, again").
Session 8 had set 80k from a milder drift. Later days put the cost crossover lower (FANNG's warm epoch cheaper from
100k in sessions 22 and 24: the CPU exact path's speed varies 2x on that VM), and list recall itself cost no accuracy
(lists holding 0.73-0.93 of the true neighbours trained the glyph study's task as well as exact ones, session 25), so
the threshold is a cost question; it stays until a real training set that large confirms a lower one. On a GPU exact
search is one matrix product per chunk of queries, so ``auto`` always picks it there."""


def resolve_index(cfg: RunConfig, device: torch.device, n_points: int | None) -> str:
    """The index ``mining.index`` names; for ``auto``, ``exact`` on a CUDA device or up to
    :data:`AUTO_EXACT_MAX_POINTS` training points, else ``fanng``. ``n_points``: the training-set size (needed for
    ``auto``)."""
    name = cfg.mining.index
    if name != "auto":
        return name
    if n_points is None:
        raise ValueError("n_points: mining.index=auto needs the training-set size")
    return "exact" if torch.device(device).type == "cuda" or n_points <= AUTO_EXACT_MAX_POINTS else "fanng"


def index_factory(cfg: RunConfig, device: torch.device, n_points: int | None = None):
    """A zero-argument callable that returns a fresh neighbour index of the configured kind (``auto`` resolved by
    :func:`resolve_index` for ``n_points`` training points), built with ``mining.index_options`` as keyword arguments
    (the exact index runs on the training device, FANNG is seeded with the run's seed)."""
    name = resolve_index(cfg, device, n_points)
    spec, options, seed = INDEXES.get(name), dict(cfg.mining.index_options), cfg.seed
    told: list[bool] = []

    def make():
        if cfg.mining.index == "auto" and not told:  # said once, when mining first needs an index
            logger.info("mining.index auto: %s for %d training points", name, n_points)
            told.append(True)
        return spec.make(options, seed, device)

    return make


def build_smart_miner(cfg: RunConfig, device: torch.device, n_points: int | None = None):
    from smartmine.smart import AdaptiveKappa, HoldoutGuard, SmartMiner, SteeredKappa

    m = cfg.mining
    kappa0 = None if m.kappa == "auto" else float(m.kappa)
    legacy = m.controller == "legacy"
    if legacy:
        controller = AdaptiveKappa(
            kappa0=kappa0, target_error=m.target_error, window=m.window, kappa_min=m.kappa_min, kappa_max=m.kappa_max
        )
    else:
        controller = SteeredKappa(
            kappa0=None if kappa0 is None else min(max(kappa0, m.kappa_min), m.kappa_max),
            target_error=m.target_error, window=m.window, kappa_min=m.kappa_min, kappa_max=m.kappa_max,
            min_share_scale=m.min_share_scale, cautious_start=m.cautious_start, max_change=m.kappa_max_change,
        )  # fmt: skip
    return SmartMiner(
        index_factory=index_factory(cfg, device, n_points),
        k=m.k,
        kappa_controller=controller,
        adaptive=m.adaptive,
        kappa=16.0 if kappa0 is None else kappa0,
        warmup_epochs=m.warmup_epochs,
        mined_fraction=m.mined_fraction,
        selection=m.selection,
        margin=cfg.loss.margin,
        triplets_per_epoch=m.triplets_per_epoch,
        seed=cfg.seed,
        list_recall_sample=0 if legacy else m.list_recall_sample,
        # The legacy system kept FANNG's fixed budget; a budget the user set is never raised.
        scale_search_budget=not legacy and "search_budget" not in m.index_options,
        match_list_length="knn_k" not in m.index_options,
        warm_start=m.warm_start,
        holdout_guard=HoldoutGuard(patience=m.holdout_patience) if m.holdout_patience else None,
        extra_positives=m.extra_positives,
        extra_negatives=m.extra_negatives,
    )


def build_optimizers(cfg: RunConfig, model: torch.nn.Module, loss: torch.nn.Module):
    """The model optimiser (backbone and head groups) and, when β is learned, β's own SGD optimiser."""
    o = cfg.optim
    groups = model.parameter_groups(lr=o.lr, head_lr_mult=o.head_lr_mult, weight_decay=o.weight_decay)
    if o.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    elif o.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    optimizers = {"model": opt}
    betas = list(loss.beta_parameters()) if hasattr(loss, "beta_parameters") else []
    if betas:
        optimizers["beta"] = torch.optim.SGD(betas, lr=cfg.loss.beta_lr, momentum=0.9, weight_decay=0.0)
    return optimizers


def build_schedulers(cfg: RunConfig, optimizers: dict) -> dict:
    o = cfg.optim
    if o.schedule == "none":
        return {}
    out = {}
    for name, opt in optimizers.items():
        if o.schedule == "step":
            out[name] = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
        else:
            out[name] = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(o.milestones), gamma=o.gamma)
    return out



def build_batch_source(
    cfg: RunConfig,
    labels: np.ndarray,
    loader: Loader,
    device: torch.device,
    dist: DistInfo,
    record: RecordMined | None = None,
) -> BatchSource:
    """The configured :class:`~smartmine.training.batch_source.BatchSource`: smart-mining triplet batches, or P×K
    batches (graph-composed with ``mining.graph_batches``) mined in the batch."""
    from smartmine.training.batch_source import GraphBatchSource, InBatchSource

    m = cfg.mining
    if m.strategy == "smart":
        from smartmine.smart import EmbeddingCache
        from smartmine.training.smart_source import SmartTripletSource

        cache = None
        if m.embedding_source == "cache":
            if dist.enabled:
                raise TrainingError(
                    "mining.embedding_source=cache is not supported under torch.distributed yet (each rank sees "
                    "only its own forward passes); use mining.embedding_source=fresh"
                )
            cache = EmbeddingCache(len(labels), cfg.model.embedding_dim)
        return SmartTripletSource(
            build_smart_miner(cfg, device, len(labels)), labels, loader, triplets_per_batch=m.triplets_per_batch,
            count_mined_only=m.error_counts == "mined", cache=cache, dist=dist, seed=cfg.seed, record=record,
            batch_miner_factory=build_batch_miner_factory(cfg),
        )  # fmt: skip
    common: dict = dict(
        classes_per_batch=m.classes_per_batch, samples_per_class=m.samples_per_class, strategy=m.strategy,
        seed=cfg.seed, num_replicas=dist.world_size, rank=dist.rank, record=record,
    )  # fmt: skip
    miners = functools.partial(build_in_batch_miner, cfg)
    if m.graph_batches:
        return GraphBatchSource(
            labels, loader, miners, num_classes=int(labels.max()) + 1,
            index_factory=index_factory(cfg, device, len(labels)), k=m.k, warmup_epochs=m.warmup_epochs, **common,
        )  # fmt: skip
    return InBatchSource(labels, loader, miners, **common)
