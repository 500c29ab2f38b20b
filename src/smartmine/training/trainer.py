"""The training loop: set-up, epochs of steps over a batch source, evaluation and checkpoints.

Where the batches and their triplets come from is the :class:`~smartmine.training.batch_source.BatchSource`'s job
(in-batch P×K, graph-composed P×K or smart-mining plans); the run folder's files are written by
:mod:`smartmine.run_folder`. Every epoch is seeded from ``(seed, epoch)`` so that a run resumed from its last
checkpoint continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from smartmine import run_folder
from smartmine.training import builders
from smartmine.training.batch_source import Batch
from smartmine.training.checkpoint import load_checkpoint, save_checkpoint
from smartmine.training.config import RunConfig, absent_key_values, config_to_dict, dump_config
from smartmine.training.distributed import DistInfo, all_reduce_sum, barrier, gather_rows, init_distributed
from smartmine.training.embedding import embed_dataset
from smartmine.training.epoch_stats import EpochStats, summary
from smartmine.training.errors import TrainingError, fault_point
from smartmine.training.head_setup import init_head
from smartmine.training.runtime import epoch_seed, seed_everything, train_device

__all__ = ["EpochStats", "Trainer", "TrainingError", "epoch_seed", "fault_point", "seed_everything", "train_device"]


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
        self.folder = run_folder.RunFolder(self.run_dir)
        self.device = train_device(cfg.train.device)
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
        builders.check_against_data(cfg, self.train_labels)
        # Only a config that fits the data gets a run folder: a refused one must not leave a folder behind that
        # the corrected re-run would then refuse to overwrite.
        if self.dist.is_main:
            self._prepare_run_dir(resume=resume, overwrite=overwrite)
        barrier(self.dist)

        self.model = builders.build_model(cfg, self.data.in_channels).to(self.device)
        # Progress bars only on an interactive terminal (logs and CI get one summary line per epoch).
        self._progress = cfg.train.progress and self.dist.is_main and sys.stderr.isatty()
        if not resume:  # a resumed run takes its head from the checkpoint
            init_head(cfg, self.model, self.data, self.device, self.dist, log=self.log, progress=self._progress)
        self.objective = builders.build_loss(cfg, self.num_classes)
        self.objective.to(self.device)
        self.optimizers = builders.build_optimizers(cfg, self.model, self.objective)
        self.schedulers = builders.build_schedulers(cfg, self.optimizers)
        self.train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        record = functools.partial(run_folder.write_mined, self.run_dir) if self.dist.is_main else None
        self.source = builders.build_batch_source(
            cfg, self.train_labels, self._loader, self.device, self.dist, record=record
        )
        self.history: list[dict] = []
        self.best_value = -math.inf
        self.start_epoch = 1
        if resume:
            self._resume()

    # ----------------------------------------------------------------------------------------------- set-up
    def _prepare_run_dir(self, *, resume: bool, overwrite: bool, create: bool = True) -> None:
        d = self.run_dir
        if resume:
            if not self.folder.last_checkpoint.exists():
                raise TrainingError(f"--resume: no checkpoint at '{self.folder.last_checkpoint}'")
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
        self.folder.checkpoints.mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.folder.config)

    def _loader(self, batch_sampler) -> DataLoader:
        return DataLoader(self.data.train, batch_sampler=batch_sampler, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _embed(self, dataset, desc: str, indices: np.ndarray | None = None) -> torch.Tensor:
        """Embeddings of ``dataset`` (rows ``indices``, default all) with test-time transforms, on this process."""
        return embed_dataset(
            self.model, dataset, device=self.device, batch_size=self.cfg.data.eval_batch_size,
            num_workers=self.cfg.data.num_workers, indices=indices, amp=self.cfg.train.amp,
            batch_transform=self.data.eval_batch_transform, progress=self._progress, desc=desc,
        )  # fmt: skip

    def _embed_train(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """Embeddings of training rows ``indices`` on this process; ``None``: the whole training set, identical on
        every rank (each rank embeds its strided shard, then all ranks exchange them)."""
        if indices is not None:
            return self._embed(self.data.train_eval, "embed train", indices)
        n = len(self.train_labels)
        local = torch.arange(self.dist.rank, n, self.dist.world_size)
        return gather_rows(self._embed(self.data.train_eval, "embed train", local.numpy()), local, n, self.dist)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int, *, best: bool) -> None:
        if not self.dist.is_main:
            return
        extra = {"loss": self.objective.state_dict(), "smart": None, "gallery_anchors": None,
                 **self.source.state_dict(), "history": self.history, "best_value": self.best_value}
        kwargs = dict(model=self.model, optimizers=self.optimizers, schedulers=self.schedulers, extra=extra,
                      config=config_to_dict(self.cfg), epoch=epoch)
        # best.pt before last.pt: a kill between the two then redoes this epoch on resume (identically) and rewrites
        # best.pt; the other order would leave a stale best.pt that no resumed epoch ever replaces.
        if best:
            save_checkpoint(self.folder.best_checkpoint, **kwargs)
        save_checkpoint(self.folder.last_checkpoint, **kwargs)

    def _resume(self) -> None:
        from smartmine.training.checkpoint import DEFAULT_RESUME_IGNORE, check_compatible

        path = self.folder.last_checkpoint
        ckpt = load_checkpoint(path, map_location="cpu")
        check_compatible(ckpt, config_to_dict(self.cfg), ignore=DEFAULT_RESUME_IGNORE, absent_means=absent_key_values())
        self.model.load_state_dict(ckpt["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(ckpt["schedulers"][name])
        extra = ckpt["extra"]
        self.objective.load_state_dict(extra["loss"])
        self.source.load_state_dict(extra)
        self.history = list(extra["history"])
        self.best_value = float(extra["best_value"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        if self.dist.is_main:
            # The CSV may hold a row written after the checkpoint: the checkpoint's history is the truth.
            run_folder.write_metrics_csv(self.folder.metrics, self.history)
            dump_config(self.cfg, self.folder.config)
        self.log(f"resumed from {path} at epoch {self.start_epoch}")

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train for ``train.epochs`` epochs (from the resume point) and return the last evaluation's metrics."""
        cfg = self.cfg
        if self.dist.is_main and cfg.eval.raw_pixel_baseline and not self.folder.baseline.exists():
            self._raw_pixel_baseline()
        # Only before the first step: a resumed run's model is no longer the untrained one.
        if cfg.eval.untrained_baseline and self.start_epoch == 1:
            self._untrained_baseline()
        last_metrics: dict = dict(self.history[-1]) if self.history else {}
        for epoch in range(self.start_epoch, cfg.train.epochs + 1):
            row = self._train_epoch(epoch)
            if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
                row.update(self._evaluate(epoch))
            # A test metric exists on evaluated epochs only; a held-out one (holdout_map@r) on every epoch.
            value = row.get(cfg.train.best_metric)
            is_best = value is not None and value > self.best_value
            if is_best:
                self.best_value = float(value)
            for sched in self.schedulers.values():
                sched.step()
            self.history.append(row)
            # Checkpoint first, then the CSV: a kill in between is repaired on resume from the checkpoint's history.
            self._save(epoch, best=is_best)
            fault_point(f"after_checkpoint:{epoch}")
            if self.dist.is_main:
                run_folder.write_metrics_csv(self.folder.metrics, self.history)
                self.log(summary(row))
            barrier(self.dist)
            last_metrics = row
        return last_metrics

    def _train_epoch(self, epoch: int) -> dict:
        seed_everything(epoch_seed(self.cfg.seed, epoch))
        self.model.train()
        t0 = time.perf_counter()
        row: dict = {"epoch": epoch, "lr": self.optimizers["model"].param_groups[0]["lr"]}
        row.update(self.source.start_epoch(epoch, self._embed_train))
        stats = EpochStats(self.device)
        bar = tqdm(total=len(self.source), desc=f"epoch {epoch}/{self.cfg.train.epochs}", leave=False,
                   disable=not self._progress)
        for b, batch in enumerate(self.source):
            fault_point(f"batch:{epoch}:{b}")
            if self._step(epoch, b, batch, stats) and self._progress:
                bar.update(1)
                bar.set_postfix({**stats.postfix(time.perf_counter() - t0), **self.source.progress()})
        bar.close()
        loss_sum, n_batches, err_num, err_den, images, skipped = all_reduce_sum(stats.totals(), self.dist)
        row["loss"] = loss_sum / max(n_batches, 1)
        row["train_error"] = err_num / err_den if err_den > 0 else None
        row["skipped_batches"] = int(skipped)
        for name, value in stats.terms.items():
            row[f"loss_{name}"] = float(value) / max(stats.batches, 1)
        row.update(self.source.end_epoch(row["train_error"]))
        if self.data.holdout is not None:
            held = self._score_holdout()
            row.update(held)
            row.update(self.source.holdout_score(held["holdout_map@r"]))
        row["epoch_seconds"] = time.perf_counter() - t0
        row["images_per_second"] = images / row["epoch_seconds"] if row["epoch_seconds"] > 0 else None
        return row

    def _step(self, epoch: int, b: int, batch: Batch, stats: EpochStats) -> bool:
        """Train on one batch; ``False`` when it was skipped for non-finite values (``train.on_nonfinite=skip``)."""
        images = batch.images.to(self.device, non_blocking=True)
        if self.data.train_batch_transform is not None:
            images = self.data.train_batch_transform(images)
        labels = batch.labels.to(self.device)
        use_amp = self.cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            emb = self.train_model(images)
        emb = emb.float()
        if not bool(torch.isfinite(emb).all()):
            return self._nonfinite(epoch, b, "embeddings (model output)", stats)
        self.source.observe(batch.indices, emb.detach())
        triplets = batch.mine(emb.detach(), labels)
        loss = self.objective(emb, labels, triplets)
        if not bool(torch.isfinite(loss)):
            bad = [k for k, v in self.objective.last_terms.items() if not math.isfinite(v)] or ["total"]
            return self._nonfinite(epoch, b, f"loss term '{bad[0]}'", stats)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        for opt in self.optimizers.values():
            opt.step()
        active = self.objective.active(emb.detach(), labels, triplets)
        stats.add(loss.detach(), active, batch.counted, self.objective.last_values, int(images.shape[0]))
        return True

    def _nonfinite(self, epoch: int, batch: int, what: str, stats: EpochStats) -> bool:
        """Handle a NaN/inf: raise (``stop``, the default; the last checkpoint stays intact) or count a skip."""
        msg = f"epoch {epoch}, batch {batch}: non-finite values in {what}"
        if self.cfg.train.on_nonfinite == "skip":
            stats.skipped += 1
            warnings.warn(msg + " (batch skipped)", stacklevel=3)
            return False
        raise TrainingError(msg + "; the last good checkpoint is kept (set train.on_nonfinite=skip to skip)")

    # ------------------------------------------------------------------------------------------ evaluation
    def _metrics(self, embeddings: torch.Tensor, labels: np.ndarray) -> dict:
        from smartmine.evaluation import is_retrieval_metric, retrieval_metrics

        e = self.cfg.eval
        out = retrieval_metrics(embeddings, labels, ks=tuple(e.ks), compute_nmi=e.compute_nmi,
                                kmeans_backend=e.kmeans_backend, seed=self.cfg.seed)
        return {k: v for k, v in out.items() if is_retrieval_metric(k)}

    def _score_holdout(self) -> dict:
        """Retrieval metrics of the held-out training classes (``holdout_`` + name); every rank computes them."""
        emb = self._embed(self.data.holdout, "embed held-out")
        out = self._metrics(emb, np.asarray(self.data.holdout.labels))
        return {f"holdout_{k}": v for k, v in out.items()}

    def _evaluate(self, epoch: int) -> dict:
        out: dict = {}
        if self.dist.is_main:
            emb = self._embed(self.data.test, "embed test")
            labels = np.asarray(self.data.test.labels)
            out = self._metrics(emb, labels)
            run_folder.save_test_embeddings(self.run_dir, emb, labels, epoch)
            spread = float(emb.std(dim=0).sum())
            out["embedding_spread"] = spread
            if spread < 1e-3:
                warnings.warn(f"epoch {epoch}: embedding collapse — test embeddings are nearly identical "
                              f"(summed std {spread:.2e})", stacklevel=2)
        barrier(self.dist)
        return out

    def _untrained_baseline(self) -> None:
        """Test metrics of the model before its first step, to ``untrained.json`` (the main rank evaluates).

        Touches no state that training depends on: every epoch reseeds its RNGs and ``_train_epoch`` puts the model
        back in training mode, so a run with this option trains exactly as one without it.
        """
        if self.dist.is_main:
            emb = self._embed(self.data.test, "embed test (untrained)")
            metrics = self._metrics(emb, np.asarray(self.data.test.labels))
            run_folder.write_untrained(self.run_dir, metrics)
            self.log("untrained model: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        barrier(self.dist)

    def _raw_pixel_baseline(self) -> None:
        loader = DataLoader(self.data.test, batch_size=512, shuffle=False)
        pixels = torch.cat([images.flatten(1).float() for images, _, _ in loader])
        run_folder.write_baseline(self.run_dir, self._metrics(pixels, np.asarray(self.data.test.labels)))
