"""The training loop: in-batch mining on P×K batches, or dataset-wide smart mining with a triplet plan per epoch.

One object owns the loop; miners, losses, indexes and metrics are plain objects it calls. Every epoch is seeded from
``(seed, epoch)`` so that a run resumed from its last checkpoint continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from smartmine.training import builders
from smartmine.training.artifacts import (
    NUM_GALLERY_ANCHORS,
    first_triplet_per_anchor,
    record_mined,
    save_test_embeddings,
)
from smartmine.training.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from smartmine.training.config import RunConfig, config_to_dict, dump_config
from smartmine.training.distributed import DistInfo, all_reduce_sum, barrier, gather_rows, init_distributed
from smartmine.training.embedding import embed_dataset
from smartmine.training.run_log import write_metrics_csv


def fault_point(name: str) -> None:
    """Fault injection for the crash-safety tests: ``SMARTMINE_FAULT=<name>`` SIGKILLs this process at ``name``.

    Names: ``batch:<epoch>:<batch>``, ``mining:<epoch>``, ``after_checkpoint:<epoch>``. Unset in normal use.
    """
    if os.environ.get("SMARTMINE_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, bad run folder, incompatible checkpoint)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device: '{name}' was requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code draws from the legacy global RNG
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every epoch of a run."""
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


class Trainer:
    """Build everything a config describes and train it.

    Args:
        cfg: a validated :class:`RunConfig`.
        resume: continue from ``run_dir/checkpoints/last.pt``.
        overwrite: clear an existing, non-empty run folder first (never done silently).
        log: where progress messages go (default ``print``).
    """

    def __init__(
        self, cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = print
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.run_dir = Path(cfg.run_dir)
        self.device = resolve_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if self.dist.is_main:  # refuse an existing folder before any work, but create nothing yet
            self._prepare_run_dir(resume=resume, overwrite=overwrite, create=False)

        seed_everything(cfg.seed)
        self.data = builders.build_datasets(cfg)
        self.train_labels = np.asarray(self.data.train.labels, dtype=np.int64)
        self.num_classes = int(self.train_labels.max()) + 1
        self._validate_against_data()
        # Only a config that fits the data gets a run folder: a refused one must not leave a folder behind that
        # the corrected re-run would then refuse to overwrite.
        if self.dist.is_main:
            self._prepare_run_dir(resume=resume, overwrite=overwrite)
        barrier(self.dist)

        self.model = builders.build_model(cfg, self.data.in_channels).to(self.device)
        self.objective, self.main_loss = builders.build_loss(cfg, self.num_classes)
        self.objective.to(self.device)
        self.optimizers = builders.build_optimizers(cfg, self.model, self.objective)
        self.schedulers = builders.build_schedulers(cfg, self.optimizers)
        self.train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        self.smart = builders.build_smart_miner(cfg, self.device) if cfg.mining.strategy == "smart" else None
        self.cache = None
        if self.smart is not None and cfg.mining.embedding_source == "cache":
            from smartmine.smart import EmbeddingCache

            if self.dist.enabled:
                raise TrainingError(
                    "mining.embedding_source=cache is not supported under torch.distributed yet (each rank sees "
                    "only its own forward passes); use mining.embedding_source=fresh"
                )
            self.cache = EmbeddingCache(len(self.train_labels), cfg.model.embedding_dim)
        self.confusion: np.ndarray | None = None
        # Progress bars only on an interactive terminal (logs and CI get one summary line per epoch).
        self._progress = cfg.train.progress and self.dist.is_main and sys.stderr.isatty()
        self.history: list[dict] = []
        self.gallery_anchors: list[int] | None = None  # training anchors whose mined triplets the report shows
        self.best_value = -math.inf
        self.start_epoch = 1
        if resume:
            self._resume()

    # ----------------------------------------------------------------------------------------------- set-up
    def _prepare_run_dir(self, *, resume: bool, overwrite: bool, create: bool = True) -> None:
        d = self.run_dir
        if resume:
            if not (d / "checkpoints" / "last.pt").exists():
                raise TrainingError(f"--resume: no checkpoint at '{d / 'checkpoints' / 'last.pt'}'")
            return
        if d.exists() and any(d.iterdir()):
            if not overwrite:
                raise TrainingError(
                    f"run folder '{d}' already exists and is not empty; pass --overwrite to replace it "
                    f"or --resume to continue it"
                )
            if not create:
                return
            shutil.rmtree(d)
        if not create:
            return
        (d / "checkpoints").mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, d / "config.yaml")

    def _validate_against_data(self) -> None:
        m = self.cfg.mining
        counts = np.bincount(self.train_labels)
        eligible = int((counts >= 2).sum())
        if eligible < 2:
            raise TrainingError(
                f"training split of '{self.cfg.data.name}' has {eligible} class(es) with two or more images; "
                "metric learning needs at least two"
            )
        if m.strategy != "smart" and m.classes_per_batch > eligible:
            raise TrainingError(
                f"mining.classes_per_batch={m.classes_per_batch} exceeds the {eligible} training classes "
                "that have two or more images"
            )
        n = len(self.train_labels)
        if m.k is not None and m.k >= n:
            raise TrainingError(f"mining.k={m.k} must be below the training-set size {n}")

    # ------------------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "loss": self.objective.state_dict(),
            "smart": self.smart.state_dict() if self.smart is not None else None,
            "history": self.history,
            "best_value": self.best_value,
            "gallery_anchors": self.gallery_anchors,
        }

    def _save(self, epoch: int, *, best: bool) -> None:
        if not self.dist.is_main:
            return
        ckpt_dir = self.run_dir / "checkpoints"
        kwargs = dict(
            model=self.model,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            extra=self._state(),
            config=config_to_dict(self.cfg),
            epoch=epoch,
        )
        # best.pt before last.pt: a kill between the two then redoes this epoch on resume (identically) and rewrites
        # best.pt; the other order would leave a stale best.pt that no resumed epoch ever replaces.
        if best:
            save_checkpoint(ckpt_dir / "best.pt", **kwargs)
        save_checkpoint(ckpt_dir / "last.pt", **kwargs)

    def _resume(self) -> None:
        from smartmine.training.checkpoint import DEFAULT_RESUME_IGNORE, check_compatible

        path = self.run_dir / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path, map_location="cpu")
        check_compatible(ckpt, config_to_dict(self.cfg), ignore=DEFAULT_RESUME_IGNORE)
        self.model.load_state_dict(ckpt["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(ckpt["schedulers"][name])
        extra = ckpt["extra"]
        self.objective.load_state_dict(extra["loss"])
        if self.smart is not None and extra["smart"] is not None:
            self.smart.load_state_dict(extra["smart"])
        self.history = list(extra["history"])
        self.best_value = float(extra["best_value"])
        self.gallery_anchors = extra.get("gallery_anchors")
        self.start_epoch = int(ckpt["epoch"]) + 1
        if self.dist.is_main:
            # The CSV may hold a row written after the checkpoint: the checkpoint's history is the truth.
            write_metrics_csv(self.run_dir / "metrics.csv", self.history)
            dump_config(self.cfg, self.run_dir / "config.yaml")
        self.log(f"resumed from {path} at epoch {self.start_epoch}")

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train for ``train.epochs`` epochs (from the resume point) and return the last evaluation's metrics."""
        cfg = self.cfg
        if self.dist.is_main and cfg.eval.raw_pixel_baseline and not (self.run_dir / "baseline.json").exists():
            self._raw_pixel_baseline()
        last_metrics: dict = dict(self.history[-1]) if self.history else {}
        for epoch in range(self.start_epoch, cfg.train.epochs + 1):
            row = self._train_epoch(epoch)
            do_eval = epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs
            is_best = False
            if do_eval:
                metrics = self._evaluate(epoch)
                row.update(metrics)
                value = metrics.get(cfg.train.best_metric, -math.inf)
                is_best = value > self.best_value
                self.best_value = max(self.best_value, value)
            for sched in self.schedulers.values():
                sched.step()
            self.history.append(row)
            # Checkpoint first, then the CSV: a kill in between is repaired on resume from the checkpoint's history.
            self._save(epoch, best=is_best)
            fault_point(f"after_checkpoint:{epoch}")
            if self.dist.is_main:
                write_metrics_csv(self.run_dir / "metrics.csv", self.history)
                self.log(self._summary(row))
            barrier(self.dist)
            last_metrics = row
        return last_metrics

    def _summary(self, row: dict) -> str:
        parts = [f"epoch {int(row['epoch'])}", f"loss {row['loss']:.4f}"]
        if row.get("train_error") is not None:
            parts.append(f"err {row['train_error']:.3f}")
        if row.get("kappa") is not None:
            parts.append(f"κ {row['kappa']:.3g}")
        for key in ("recall@1", "map@r", "nmi"):
            if key in row:
                parts.append(f"{key} {row[key]:.4f}")
        parts.append(f"{row['epoch_seconds']:.1f}s")
        return " | ".join(parts)

    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        seed = epoch_seed(cfg.seed, epoch)
        seed_everything(seed)
        self.model.train()
        t0 = time.perf_counter()
        row: dict = {"epoch": epoch, "lr": self.optimizers["model"].param_groups[0]["lr"]}
        if self.smart is not None:
            batches, total = self._smart_batches(epoch, row)
        else:
            batches, total = self._in_batch_batches(epoch, seed, row)
        stats = self._run_batches(epoch, batches, total)
        counts = all_reduce_sum(
            [stats["loss_sum"], stats["batches"], stats["err_num"], stats["err_den"], stats["images"],
             stats["skipped"]],
            self.dist,
        )
        loss_sum, n_batches, err_num, err_den, images, skipped = counts
        row["loss"] = loss_sum / max(n_batches, 1)
        row["train_error"] = err_num / err_den if err_den > 0 else None
        row["skipped_batches"] = int(skipped)
        for name, value in stats["terms"].items():
            row[f"loss_{name}"] = value / max(stats["batches"], 1)
        if self.smart is None and self.dist.is_main:
            self._record_probe_triplets(epoch)
        if self.smart is not None and row["train_error"] is not None:
            next_kappa = self.smart.update_error(row["train_error"])
            row["next_kappa"] = next_kappa
        row["epoch_seconds"] = time.perf_counter() - t0
        row["images_per_second"] = images / row["epoch_seconds"] if row["epoch_seconds"] > 0 else None
        return row

    def _loader(self, batch_sampler) -> DataLoader:
        return DataLoader(
            self.data.train,
            batch_sampler=batch_sampler,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _in_batch_batches(self, epoch: int, seed: int, row: dict) -> tuple[Iterator, int]:
        from smartmine.data.samplers import PKBatchSampler

        m = self.cfg.mining
        sampler = None
        if m.graph_batches and epoch > m.warmup_epochs:
            sampler = self._graph_sampler(epoch, row)
        if sampler is None:
            sampler = PKBatchSampler(
                self.train_labels, m.classes_per_batch, m.samples_per_class, seed=self.cfg.seed,
                num_replicas=self.dist.world_size, rank=self.dist.rank,
            )
        sampler.set_epoch(epoch)
        miner = builders.build_in_batch_miner(self.cfg, seed)

        def gen() -> Iterator:
            for images, labels, idx in self._loader(sampler):
                yield images, labels, idx, miner, None

        return gen(), len(sampler)

    def _graph_sampler(self, epoch: int, row: dict):
        from smartmine.smart.graph_batches import GraphPKBatchSampler, class_confusion

        m = self.cfg.mining
        emb = self._training_embeddings(row)
        t = time.perf_counter()
        index = builders.index_factory(self.cfg, self.device)()
        index.build(emb)
        k = m.k or max(64, 2 * int(np.bincount(self.train_labels).max()))
        k = min(k, len(self.train_labels) - 1)
        _, nbr = index.neighbours(k)
        self.confusion = class_confusion(nbr, self.train_labels, self.num_classes)
        row["mining_seconds"] = row.get("embed_seconds", 0.0) + time.perf_counter() - t
        return GraphPKBatchSampler(
            self.train_labels, m.classes_per_batch, m.samples_per_class, self.confusion, seed=self.cfg.seed,
            num_replicas=self.dist.world_size, rank=self.dist.rank,
        )

    def _training_embeddings(self, row: dict) -> torch.Tensor:
        """Embeddings of the whole training set, identical on every rank (each rank embeds its shard).

        With ``mining.embedding_source=cache`` the rows come from the previous epoch's training forward passes and only
        the rows that epoch did not visit are embedded afresh.
        """
        t = time.perf_counter()
        n = len(self.train_labels)
        if self.cache is not None:
            missing = self.cache.missing()
            if len(missing):
                rows = self._embed_train(missing)
                self.cache.update(missing, rows)
            emb = torch.from_numpy(self.cache.get())
            row["cache_refreshed_rows"] = len(missing)
        else:
            local = torch.arange(self.dist.rank, n, self.dist.world_size)
            emb = gather_rows(self._embed_train(local.numpy()), local, n, self.dist)
        row["embed_seconds"] = time.perf_counter() - t
        return emb

    def _embed_train(self, indices: np.ndarray) -> torch.Tensor:
        return embed_dataset(
            self.model, self.data.train_eval, device=self.device, batch_size=self.cfg.data.eval_batch_size,
            num_workers=self.cfg.data.num_workers, indices=indices, amp=self.cfg.train.amp,
            batch_transform=self.data.eval_batch_transform,
            progress=self._progress, desc="embed train",
        )

    def _smart_batches(self, epoch: int, row: dict) -> tuple[Iterator, int]:
        assert self.smart is not None
        m = self.cfg.mining
        emb = None
        if self.cache is not None:
            self.cache.new_epoch()  # rows written last epoch are now one epoch old: the most the cache allows
        if epoch > m.warmup_epochs:
            emb = self._training_embeddings(row)
        fault_point(f"mining:{epoch}")
        plan, stats = self.smart.plan_epoch(emb, self.train_labels, epoch - 1)
        row.update(_smart_stats(stats))
        self._check_same_plan(plan, epoch)
        if emb is not None and self.dist.is_main:
            self._record_smart_triplets(epoch, emb, stats)
        row["mining_seconds"] = row.get("embed_seconds", 0.0) + sum(
            row.get(k, 0.0) or 0.0 for k in ("index_seconds", "search_seconds", "selection_seconds")
        )
        shard = plan.shard(self.dist.rank, self.dist.world_size)
        triplet_batches = list(shard.batches(m.triplets_per_batch))
        uniques = [np.unique(np.concatenate([b[0], b[1], b[2]])) for b in triplet_batches]
        count_mined = m.error_counts == "mined"

        def gen() -> Iterator:
            loader = self._loader([u.tolist() for u in uniques])
            for (images, labels, idx), u, b in zip(loader, uniques, triplet_batches, strict=True):
                a, p, n_, is_mined = b
                trip = tuple(torch.from_numpy(np.searchsorted(u, x)).long() for x in (a, p, n_))
                counted = torch.from_numpy(np.asarray(is_mined, dtype=bool)) if count_mined else None
                yield images, labels, idx, trip, counted

        return gen(), len(triplet_batches)

    def _record_smart_triplets(self, epoch: int, emb: torch.Tensor, stats: dict) -> None:
        """Sample for the report: the first mined triplet of a fixed set of anchors (fixed at the first mining)."""
        sel = getattr(self.smart, "last_selection", None)
        if sel is None:
            return
        if self.gallery_anchors is None:
            mined = np.unique(np.asarray(sel.anchors))
            if len(mined) == 0:
                return
            rng = np.random.default_rng(self.cfg.seed)
            pick = rng.choice(mined, size=min(NUM_GALLERY_ANCHORS, len(mined)), replace=False)
            self.gallery_anchors = sorted(int(a) for a in pick)
        triplets = first_triplet_per_anchor(
            np.asarray(sel.anchors), np.asarray(sel.positives), np.asarray(sel.negatives), self.gallery_anchors
        )
        record_mined(self.run_dir, epoch, "smart", triplets, emb, kappa=stats.get("kappa"))

    def _record_probe_triplets(self, epoch: int) -> None:
        """For in-batch miners: mine a fixed probe batch (P classes × K images) and keep each class's first anchor."""
        m = self.cfg.mining
        rng = np.random.default_rng(self.cfg.seed)
        counts = np.bincount(self.train_labels)
        eligible = np.flatnonzero(counts >= 2)
        classes = rng.choice(eligible, size=min(m.classes_per_batch, len(eligible)), replace=False)
        probe = np.concatenate([
            rng.choice(np.flatnonzero(self.train_labels == c), size=m.samples_per_class,
                       replace=bool(counts[c] < m.samples_per_class))
            for c in classes
        ])
        emb = self._embed_train(probe)
        miner = builders.build_in_batch_miner(self.cfg, epoch_seed(self.cfg.seed, epoch))
        a, p, n = (t.cpu().numpy() for t in miner(emb, torch.from_numpy(self.train_labels[probe])))
        wanted_rows = [i * m.samples_per_class for i in range(min(NUM_GALLERY_ANCHORS, len(classes)))]
        rows = first_triplet_per_anchor(a, p, n, wanted_rows)
        triplets = [(int(probe[r]), None if q is None else int(probe[q]), None if z is None else int(probe[z]))
                    for r, q, z in rows]
        index_of = {int(idx): row for row, idx in enumerate(probe)}
        record_mined(self.run_dir, epoch, m.strategy, triplets, emb, index_of=index_of)

    def _check_same_plan(self, plan, epoch: int) -> None:
        """Under torch.distributed every rank must have mined the identical plan (same embeddings, seed and κ)."""
        if not self.dist.enabled:
            return
        import torch.distributed as dist

        h = hashlib.sha256()
        for part in (plan.a, plan.p, plan.n):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        digests: list = [None] * self.dist.world_size
        dist.all_gather_object(digests, h.hexdigest())
        if len(set(digests)) != 1:
            raise TrainingError(f"epoch {epoch}: ranks mined different triplet plans ({digests})")

    def _run_batches(self, epoch: int, batches: Iterator, total: int) -> dict:
        cfg = self.cfg
        stats = {"loss_sum": 0.0, "batches": 0, "err_num": 0.0, "err_den": 0.0, "images": 0, "skipped": 0,
                 "terms": {}}
        use_amp = cfg.train.amp and self.device.type == "cuda"
        bar = tqdm(total=total, desc=f"epoch {epoch}/{cfg.train.epochs}", leave=False,
                   disable=not self._progress)
        t0 = time.perf_counter()
        for b, (images, labels, idx, triplets_or_miner, counted) in enumerate(batches):
            fault_point(f"batch:{epoch}:{b}")
            images = images.to(self.device, non_blocking=True)
            if self.data.train_batch_transform is not None:
                images = self.data.train_batch_transform(images)
            labels = labels.to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                emb = self.train_model(images)
            emb = emb.float()
            if not bool(torch.isfinite(emb).all()):
                if self._nonfinite(epoch, b, "embeddings (model output)", stats):
                    continue
            if self.cache is not None:
                self.cache.update(idx.numpy(), emb.detach().cpu())
            if isinstance(triplets_or_miner, tuple):
                triplets = tuple(t.to(self.device) for t in triplets_or_miner)
            else:
                triplets = triplets_or_miner(emb.detach(), labels)
            loss = self.objective(emb, labels, triplets)
            if not bool(torch.isfinite(loss)):
                bad = [k for k, v in self.objective.last_terms.items() if not math.isfinite(v)] or ["total"]
                if self._nonfinite(epoch, b, f"loss term '{bad[0]}'", stats):
                    continue
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            for opt in self.optimizers.values():
                opt.step()
            with torch.no_grad():
                active = self._active_triplets(emb.detach(), triplets)
                if counted is not None:
                    active = active[counted.to(active.device)]
                stats["err_num"] += float(active.sum())
                stats["err_den"] += float(active.numel())
            stats["loss_sum"] += float(loss.detach())
            stats["batches"] += 1
            stats["images"] += int(images.shape[0])
            for name, value in self.objective.last_terms.items():
                stats["terms"][name] = stats["terms"].get(name, 0.0) + float(value)
            bar.update(1)
            elapsed = time.perf_counter() - t0
            postfix = {"loss": f"{float(loss.detach()):.4f}", "img/s": f"{stats['images'] / max(elapsed, 1e-9):.0f}"}
            if stats["err_den"]:
                postfix["err"] = f"{stats['err_num'] / stats['err_den']:.3f}"
            if self.smart is not None:
                postfix["κ"] = f"{self.smart.kappa:.3g}"
            bar.set_postfix(postfix)
        bar.close()
        return stats

    def _active_triplets(self, emb: torch.Tensor, triplets: tuple) -> torch.Tensor:
        """Which triplets carry a non-zero triplet loss (the training error of the κ controller)."""
        if hasattr(self.main_loss, "per_triplet"):
            return self.main_loss.per_triplet(emb, triplets) > 0
        from smartmine.distances import row_distances

        a, p, n = triplets
        m = self.cfg.loss.margin
        return row_distances(emb, a, n) < row_distances(emb, a, p) + m

    def _nonfinite(self, epoch: int, batch: int, what: str, stats: dict) -> bool:
        """Handle a NaN/inf: raise (``stop``, the default; the last checkpoint stays intact) or count a skip."""
        msg = f"epoch {epoch}, batch {batch}: non-finite values in {what}"
        if self.cfg.train.on_nonfinite == "skip":
            stats["skipped"] += 1
            warnings.warn(msg + " (batch skipped)", stacklevel=2)
            return True
        raise TrainingError(msg + "; the last good checkpoint is kept (set train.on_nonfinite=skip to skip)")

    # ------------------------------------------------------------------------------------------ evaluation
    def _evaluate(self, epoch: int) -> dict:
        from smartmine.evaluation import retrieval_metrics

        out: dict = {}
        if self.dist.is_main:
            emb = embed_dataset(
                self.model, self.data.test, device=self.device, batch_size=self.cfg.data.eval_batch_size,
                num_workers=self.cfg.data.num_workers, amp=self.cfg.train.amp,
                batch_transform=self.data.eval_batch_transform,
                progress=self._progress, desc="embed test",
            )
            labels = np.asarray(self.data.test.labels)
            out = {k: v for k, v in retrieval_metrics(
                emb, labels, ks=tuple(self.cfg.eval.ks), compute_nmi=self.cfg.eval.compute_nmi,
                kmeans_backend=self.cfg.eval.kmeans_backend,
                seed=self.cfg.seed,
            ).items() if _is_metric(k)}
            save_test_embeddings(self.run_dir, emb, labels, epoch)
            spread = float(emb.std(dim=0).sum())
            out["embedding_spread"] = spread
            if spread < 1e-3:
                warnings.warn(f"epoch {epoch}: embedding collapse — test embeddings are nearly identical "
                              f"(summed std {spread:.2e})", stacklevel=2)
        barrier(self.dist)
        return out

    def _raw_pixel_baseline(self) -> None:
        from smartmine.evaluation import retrieval_metrics

        loader = DataLoader(self.data.test, batch_size=512, shuffle=False)
        pixels = torch.cat([images.flatten(1).float() for images, _, _ in loader])
        labels = np.asarray(self.data.test.labels)
        metrics = {k: v for k, v in retrieval_metrics(
            pixels, labels, ks=tuple(self.cfg.eval.ks), compute_nmi=self.cfg.eval.compute_nmi, seed=self.cfg.seed,
            kmeans_backend=self.cfg.eval.kmeans_backend,
        ).items() if _is_metric(k)}
        atomic_write_bytes(self.run_dir / "baseline.json", json.dumps(metrics, indent=2).encode())


def _is_metric(key: str) -> bool:
    return key.startswith("recall@") or key in ("nmi", "map@r", "r_precision", "precision@1")


def _smart_stats(stats: dict) -> dict:
    keep = ("kappa", "anchors_with_negatives", "mined_triplets", "random_triplets", "index_seconds",
            "search_seconds", "selection_seconds", "shortfall")
    return {k: stats[k] for k in keep if k in stats}
