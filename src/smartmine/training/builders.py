"""Turn a :class:`RunConfig` into the objects of a run: datasets, model, loss, miner, optimisers, schedules."""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from smartmine.training.config import ConfigError, RunConfig

SMALL_IMAGE_DATASETS = ("glyphs", "digits")


@dataclass
class Datasets:
    train: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    train_eval: torch.utils.data.Dataset
    """The training split with test-time transforms (the fresh embedding pass of smart mining)."""
    in_channels: int
    train_batch_transform: Callable | None = None
    """Applied by the trainer to whole training batches on the device (small in-memory images)."""
    eval_batch_transform: Callable | None = None
    """Applied to whole batches of every embedding pass (small in-memory images)."""


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
    return Datasets(
        train=train,
        test=test,
        train_eval=train_eval,
        in_channels=1 if train.kind == "small" else 3,
        train_batch_transform=train_tf,
        eval_batch_transform=eval_tf,
    )


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


def build_loss(cfg: RunConfig, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Return ``(objective, main_loss)``: the weighted sum that is optimised, and its main (triplet-type) term."""
    from smartmine.losses import (
        ContrastiveLoss,
        GlobalLoss,
        MarginLoss,
        RatioTripletLoss,
        TripletLoss,
        WeightedSumLoss,
    )

    lc = cfg.loss
    main: torch.nn.Module
    if lc.name == "ratio_triplet":
        main = RatioTripletLoss(margin=lc.margin)
    elif lc.name == "triplet":
        main = TripletLoss(margin=lc.margin, squared=lc.squared)
    elif lc.name == "margin":
        main = MarginLoss(
            alpha=lc.margin,
            beta=lc.beta,
            nu=lc.nu,
            num_classes=num_classes if lc.beta_per_class else None,
            learn_beta=lc.learn_beta,
        )
    else:
        main = ContrastiveLoss(margin=lc.contrastive_margin)
    terms = {lc.name: (main, 1.0)}
    if lc.global_weight > 0:
        terms["global"] = (GlobalLoss(lam=lc.global_lambda, t=lc.global_t), lc.global_weight)
    return WeightedSumLoss(terms), main


def build_in_batch_miner(cfg: RunConfig, seed: int):
    from smartmine.miners import DistanceWeightedMiner, HardMiner, RandomMiner, SemiHardMiner

    m = cfg.mining
    if m.strategy == "random":
        return RandomMiner(seed=seed, max_triplets=m.max_triplets)
    if m.strategy == "semihard":
        return SemiHardMiner(seed=seed, max_triplets=m.max_triplets)
    if m.strategy == "hard":
        return HardMiner(seed=seed, max_triplets=m.max_triplets)
    if m.strategy == "distance_weighted":
        return DistanceWeightedMiner(
            cutoff=m.cutoff, nonzero_loss_cutoff=m.nonzero_loss_cutoff, seed=seed, max_triplets=m.max_triplets
        )
    raise ConfigError(f"mining.strategy: '{m.strategy}' is not an in-batch strategy")


def _index_class(kind: str) -> type:
    if kind == "exact":
        from smartmine.index.exact import ExactIndex

        return ExactIndex
    if kind == "fanng":
        from smartmine.index.fanng import FanngIndex

        return FanngIndex
    from smartmine.index.faiss_index import FaissIndex

    return FaissIndex


def _fixed_index_args(kind: str, seed: int, device: torch.device | str) -> dict:
    """Constructor arguments the trainer sets itself; ``mining.index_options`` may not override them."""
    return {"exact": {"device": device}, "fanng": {"seed": seed}, "faiss": {}}[kind]


def _make_index(kind: str, options: dict, seed: int, device: torch.device | str):
    return _index_class(kind)(**_fixed_index_args(kind, seed, device), **options)


def check_index_options(kind: str, options: dict) -> None:
    """Raise :class:`ConfigError` naming the key if ``mining.index_options`` is not a valid set of keyword arguments
    for the ``kind`` index (unknown name, a name the trainer sets itself, or a value the constructor rejects)."""
    cls = _index_class(kind)
    fixed = _fixed_index_args(kind, seed=0, device="cpu")
    allowed = [p for p in inspect.signature(cls).parameters if p not in fixed]
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"mining.index_options.{key}: not an option of {cls.__name__} (mining.index: {kind}){hint}; "
                f"options: {', '.join(allowed)}"
            )
    try:
        _make_index(kind, options, seed=0, device="cpu")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"mining.index_options: {exc}") from exc


def index_factory(cfg: RunConfig, device: torch.device):
    """A zero-argument callable that returns a fresh neighbour index of the configured kind, built with
    ``mining.index_options`` as keyword arguments (the exact index runs on the training device, FANNG is seeded with
    the run's seed)."""
    kind, options, seed = cfg.mining.index, dict(cfg.mining.index_options), cfg.seed
    return lambda: _make_index(kind, options, seed, device)


def build_smart_miner(cfg: RunConfig, device: torch.device):
    from smartmine.smart import AdaptiveKappa, SmartMiner

    m = cfg.mining
    controller = AdaptiveKappa(
        kappa0=m.kappa, target_error=m.target_error, window=m.window, kappa_min=m.kappa_min, kappa_max=m.kappa_max
    )
    return SmartMiner(
        index_factory=index_factory(cfg, device),
        k=m.k,
        kappa_controller=controller,
        adaptive=m.adaptive,
        kappa=m.kappa,
        warmup_epochs=m.warmup_epochs,
        mined_fraction=m.mined_fraction,
        selection=m.selection,
        margin=cfg.loss.margin,
        triplets_per_epoch=m.triplets_per_epoch,
        seed=cfg.seed,
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

