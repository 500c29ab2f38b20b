"""The peers of the cub100 study: pytorch-metric-learning's losses and miners driving *our* model and data.

Everything except the loss and the miner is shared with smartmine's trainer, so that the comparison measures mining
and loss alone: the datasets and their transforms come from :func:`smartmine.training.builders.build_datasets`, the
EfficientNet-Lite0 + 64-d head from :func:`~smartmine.training.builders.build_model` (built after the same seeding,
so the head starts from the same weights), the AdamW groups (backbone ``lr``, head ``lr × head_lr_mult``) from
:meth:`~smartmine.models.embedder.Embedder.parameter_groups`, the evaluation from
:func:`smartmine.evaluation.retrieval_metrics` on :func:`~smartmine.training.embedding.embed_dataset` passes. Batches
come from PML's own ``MPerClassSampler`` (P classes × K images, ``length_before_new_iter`` = training-set size, so
an epoch sees about as many images as one of our P×K epochs). A learned per-class β (margin loss) gets its own SGD
(``loss.beta_lr``, momentum 0.9, no weight decay), as in our trainer.

Peers (names used by ``benchmarks/cub100_study.py``):

- ``pml_triplet_semihard``: ``TripletMarginLoss(margin)`` + ``TripletMarginMiner(margin, type_of_triplets="semihard")``;
- ``pml_margin_dw``: ``MarginLoss(margin, beta, learn_beta=True, num_classes=C)`` + ``DistanceWeightedMiner(cutoff,
  nonzero_loss_cutoff)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from smartmine.run_folder import write_metrics_csv
from smartmine.training import builders
from smartmine.training.config import RunConfig, config_to_dict, dump_config
from smartmine.training.embedding import embed_dataset
from smartmine.training.head_setup import BackboneFeatures, init_head
from smartmine.training.runtime import epoch_seed, seed_everything, train_device

PEERS = ("pml_triplet_semihard", "pml_margin_dw")
METRIC_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r", "r_precision")


def require_pml():
    """Import ``pytorch_metric_learning`` or raise ``ImportError`` saying how to get it (also on the GPU machine)."""
    try:
        import pytorch_metric_learning
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the peer configurations need pytorch-metric-learning (pip install pytorch-metric-learning; on the GPU "
            "machine carry its wheel in .whl/, see docs/BENCHMARKS.md)"
        ) from exc
    return pytorch_metric_learning


def build_peer(name: str, cfg: RunConfig, num_classes: int):
    """``(loss, miner)`` of peer ``name`` with the config's margin / β / distance-weighted cut-offs."""
    require_pml()
    from pytorch_metric_learning import losses, miners

    if name == "pml_triplet_semihard":
        return (
            losses.TripletMarginLoss(margin=cfg.loss.margin),
            miners.TripletMarginMiner(margin=cfg.loss.margin, type_of_triplets="semihard"),
        )
    if name == "pml_margin_dw":
        return (
            losses.MarginLoss(
                margin=cfg.loss.margin,
                nu=cfg.loss.nu,
                beta=cfg.loss.beta,
                learn_beta=True,
                num_classes=num_classes if cfg.loss.beta_per_class else None,
            ),
            miners.DistanceWeightedMiner(cutoff=cfg.mining.cutoff, nonzero_loss_cutoff=cfg.mining.nonzero_loss_cutoff),
        )
    raise ValueError(f"name: unknown peer {name!r} (known: {', '.join(PEERS)})")


def evaluate(model: torch.nn.Module, data: builders.Datasets, cfg: RunConfig, device: torch.device) -> dict:
    """Retrieval metrics of ``model`` on the test split (self-query), as the trainer computes them."""
    from smartmine.evaluation import retrieval_metrics

    emb = embed_dataset(
        model,
        data.test,
        device=device,
        batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        amp=cfg.train.amp,
        batch_transform=data.eval_batch_transform,
    )
    out = retrieval_metrics(
        emb, np.asarray(data.test.labels), ks=tuple(cfg.eval.ks), compute_nmi=cfg.eval.compute_nmi, seed=cfg.seed
    )
    return {k: float(v) for k, v in out.items() if k in METRIC_KEYS or k.startswith("recall@")}


def untrained_baseline(cfg: RunConfig) -> dict:
    """Metrics of the untrained ImageNet features (1280-d for EfficientNet-Lite0) on the test split."""
    device = train_device(cfg.train.device)
    seed_everything(cfg.seed)
    data = builders.build_datasets(cfg)
    model = builders.build_model(cfg, data.in_channels).to(device)
    t0 = time.perf_counter()
    metrics = evaluate(BackboneFeatures(model), data, cfg, device)
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics


class PeerTrainer:
    """Train ``cfg``'s model with peer ``name`` for ``cfg.train.epochs`` epochs, evaluating every epoch.

    Writes ``config.yaml``, ``metrics.csv`` and ``peer.json`` into ``cfg.run_dir`` (created; its content replaced).
    ``fit()`` returns the per-epoch rows: ``epoch``, ``loss``, ``epoch_seconds`` (training only: loading, forward,
    mining, loss, backward, steps), ``images``, ``mined_triplets`` (per batch, mean), the metrics of
    :data:`METRIC_KEYS` and ``eval_seconds``.
    """

    def __init__(self, name: str, cfg: RunConfig, *, log: Callable[[str], None] = print) -> None:
        if name not in PEERS:
            raise ValueError(f"name: unknown peer {name!r} (known: {', '.join(PEERS)})")
        self.name, self.cfg, self.log = name, cfg, log
        self.device = train_device(cfg.train.device)
        seed_everything(cfg.seed)  # same order as the trainer: data, then model (identical head initialisation)
        self.data = builders.build_datasets(cfg)
        self.labels = np.asarray(self.data.train.labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1
        self.model = builders.build_model(cfg, self.data.in_channels).to(self.device)
        init_head(cfg, self.model, self.data, self.device, log=log)  # model.head_init, as in the trainer
        self.loss_fn, self.miner = build_peer(name, cfg, self.num_classes)
        self.loss_fn.to(self.device)
        o = cfg.optim
        groups = self.model.parameter_groups(lr=o.lr, head_lr_mult=o.head_lr_mult, weight_decay=o.weight_decay)
        self.optimizers: dict[str, torch.optim.Optimizer] = {"model": torch.optim.AdamW(groups, lr=o.lr)}
        betas = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if betas:
            self.optimizers["beta"] = torch.optim.SGD(betas, lr=cfg.loss.beta_lr, momentum=0.9, weight_decay=0.0)
        self.run_dir = Path(cfg.run_dir)

    def _loader(self) -> DataLoader:
        from pytorch_metric_learning.samplers import MPerClassSampler

        m = self.cfg.mining
        eligible = int((np.bincount(self.labels) >= 2).sum())
        batch = min(m.classes_per_batch, eligible) * m.samples_per_class
        sampler = MPerClassSampler(
            self.labels, m=m.samples_per_class, batch_size=batch, length_before_new_iter=max(len(self.labels), batch)
        )
        return DataLoader(
            self.data.train,
            batch_size=batch,
            sampler=sampler,
            drop_last=True,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def train_epoch(self, epoch: int) -> dict:
        """One epoch over the MPerClassSampler batches; returns its row (no metrics)."""
        seed_everything(epoch_seed(self.cfg.seed, epoch))  # the sampler draws from NumPy's global RNG
        self.model.train()
        use_amp = self.cfg.train.amp and self.device.type == "cuda"
        loss_sum, batches, images, mined = 0.0, 0, 0, 0
        t0 = time.perf_counter()
        for x, y, _idx in self._loader():
            x, y = x.to(self.device, non_blocking=True), y.to(self.device)
            if self.data.train_batch_transform is not None:  # small in-memory images: normalised/augmented per batch
                x = self.data.train_batch_transform(x)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                emb = self.model(x)
            emb = emb.float()
            tuples = self.miner(emb, y)
            mined += int(tuples[0].numel())
            loss = self.loss_fn(emb, y, tuples)
            if not math.isfinite(float(loss.detach())):
                raise RuntimeError(f"peer {self.name}: epoch {epoch}, batch {batches}: non-finite loss")
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in self.optimizers.values():
                opt.step()
            loss_sum += float(loss.detach())
            batches += 1
            images += int(x.shape[0])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch,
            "loss": loss_sum / max(batches, 1),
            "epoch_seconds": seconds,
            "images": images,
            "images_per_second": images / seconds if seconds > 0 else None,
            "mined_triplets": mined / max(batches, 1),
        }

    def fit(self) -> list[dict]:
        import shutil

        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        dump_config(self.cfg, self.run_dir / "config.yaml")
        rows: list[dict] = []
        for epoch in range(1, self.cfg.train.epochs + 1):
            row = self.train_epoch(epoch)
            t0 = time.perf_counter()
            row.update(evaluate(self.model, self.data, self.cfg, self.device))
            row["eval_seconds"] = time.perf_counter() - t0
            rows.append(row)
            write_metrics_csv(self.run_dir / "metrics.csv", rows)
            self.log(
                f"{self.name} epoch {epoch} | loss {row['loss']:.4f} | recall@1 {row['recall@1']:.4f} | "
                f"map@r {row['map@r']:.4f} | {row['epoch_seconds']:.1f}s"
            )
        (self.run_dir / "peer.json").write_text(
            json.dumps({"peer": self.name, "config": config_to_dict(self.cfg)}, indent=2), encoding="utf-8"
        )
        return rows
