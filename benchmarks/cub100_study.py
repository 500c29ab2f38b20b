"""Issue 6, studies 1-3 on cub100: accuracy and convergence against the peers, the paper's ablations, throughput.

Every configuration × seed is one run with its own run folder (``--runs-dir``) and one result file
``<results-dir>/<study>/<config>__seed<S>.json`` (per-epoch Recall@1/2/4/8, NMI, MAP@R, training seconds, mining
seconds, the resolved config and the machine). A run whose result file exists is skipped, so a study can be run in
slices (``--configs``, ``--seeds``, ``--time-budget``) on machines that come and go, and finished by
``--aggregate-only``, which writes the Markdown tables (``<results-dir>/<study>_summary.md``, also printed) and the
plots of Recall@1 against epoch and against training wall time (``--plots-dir``, default ``docs/``).

Modes (``--mode``):

- ``full``: the study as specified (all 100 classes, 224 px crops, 20 epochs, seeds 0 1 2); needs a GPU;
- ``cpu``: all of cub100 at 128 px crops, 4 epochs (1 random warm-up), seeds 0 1 2: 48-51 minutes per run on 2 CPU
  cores shared with another job (docs/BENCHMARKS.md); a reduced regime (a pretrained network fine-tuned briefly), NOT
  the study;
- ``quick``: real cub100 images, but a packed subset (8 classes × 10 images, 64 px crops), 2 epochs (the
  second mined), one seed: minutes on 2 CPU cores, to check that everything runs; its numbers say nothing about the
  methods;
- ``smoke``: 6 classes × 8 images at 64 px, 1 epoch, for the test suite.

Studies (``--study``): ``main`` (study 1: five smartmine configurations, two pytorch-metric-learning peers, and the
untrained ImageNet features), ``ablations`` (study 2), ``throughput`` (study 3: images/s of a full training step,
ours against the peer on the same model and batch). See ``docs/BENCHMARKS.md`` ("cub100 study") for the commands.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules (peers, pack_cub100)

import pack_cub100  # noqa: E402
import peers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_CUB100 = REPO.parent / "shared" / "data" / "cub100"
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r")
KEPT = METRICS + ("r_precision",)


@dataclass(frozen=True)
class Mode:
    """Sizes of a study mode. ``classes``/``per_class``/``short_side`` = None: the data root is used as it is."""

    epochs: int
    seeds: tuple[int, ...]
    image_size: int
    warmup_epochs: int
    classes: int | None = None
    per_class: int | None = None
    short_side: int | None = None
    classes_per_batch: int = 16


MODES: dict[str, Mode] = {
    "full": Mode(epochs=20, seeds=(0, 1, 2), image_size=224, warmup_epochs=2),
    # All of cub100 at a CPU's budget (128 px, 4 epochs, 1 warm-up): the regime of the reduced CLI check in
    # docs/BENCHMARKS.md, with every configuration and peer under the study's protocol otherwise.
    "cpu": Mode(epochs=4, seeds=(0, 1, 2), image_size=128, warmup_epochs=1),
    "quick": Mode(
        epochs=2,
        seeds=(0,),
        image_size=64,
        warmup_epochs=1,
        classes=8,
        per_class=10,
        short_side=72,
        classes_per_batch=4,
    ),
    "smoke": Mode(
        epochs=1, seeds=(0,), image_size=64, warmup_epochs=0, classes=6, per_class=8, short_side=72, classes_per_batch=3
    ),
}

# ----------------------------------------------------------------------------------------------- configurations
# Each configuration is a function of the base config dict (cub100.yaml's protocol) and the mode; it returns the
# overrides as a nested dict. Names starting with "pml_" are peers (benchmarks/peers.py).
Overrides = Callable[[Mode], dict]


# The paper's system as published (Algorithm 1, its controller, error over all triplets); the shipped default
# smart mining is the configuration "sm_default".
PAPER_MINING = {"selection": "strict", "controller": "legacy", "error_counts": "all"}


def _smart(global_weight: float, adaptive: bool, **mining) -> Overrides:
    def build(mode: Mode) -> dict:
        m = {"strategy": "smart", "index": "fanng", "adaptive": adaptive, "warmup_epochs": mode.warmup_epochs}
        m.update({**PAPER_MINING, **mining})
        return {"loss": {"name": "ratio_triplet", "global_weight": global_weight}, "mining": m}

    return build


def _smart_default(mode: Mode) -> dict:
    # The shipped defaults of every smart-mining key except the warm-up (κ0 of the base config dropped: auto).
    return {
        "loss": {"name": "ratio_triplet", "global_weight": 1.0},
        "mining": {"strategy": "smart", "index": "fanng", "warmup_epochs": mode.warmup_epochs, "kappa": "auto"},
    }


def _smart_default_with(**mining) -> Overrides:
    # The shipped defaults with some mining keys changed (e.g. the widened lists of issue 15, on or off).
    def build(mode: Mode) -> dict:
        cfg = _smart_default(mode)
        cfg["mining"].update(mining)
        return cfg

    return build


def _random_triplets(mode: Mode) -> dict:
    # Smart mining whose warm-up covers every epoch: dataset-wide uniformly random triplets, in the same triplet
    # batches as the mined configurations, no embedding pass and no index.
    return {
        "loss": {"name": "ratio_triplet", "global_weight": 1.0},
        "mining": {"strategy": "smart", "warmup_epochs": mode.epochs},
    }


def _margin_dw(graph_batches: bool = False) -> Overrides:
    def build(mode: Mode) -> dict:
        return {
            "loss": {"name": "margin", "global_weight": 0.0},
            "mining": {
                "strategy": "distance_weighted",
                "graph_batches": graph_batches,
                "warmup_epochs": mode.warmup_epochs,
            },
        }

    return build


def _peer(mode: Mode) -> dict:
    return {}


MAIN: dict[str, Overrides] = {
    "sm_default": _smart_default,
    "sm_triplet_fanng": _smart(0.0, adaptive=False),
    "sm_triplet_fanng_global": _smart(1.0, adaptive=False),
    "sm_triplet_fanng_global_adaptive": _smart(1.0, adaptive=True),
    "sm_triplet_global_random": _random_triplets,
    "sm_margin_dw": _margin_dw(),
    "pml_triplet_semihard": _peer,
    "pml_margin_dw": _peer,
}
ABLATIONS: dict[str, Overrides] = {
    **{
        f"abl_kappa{k}_fixed": _smart(1.0, adaptive=False, kappa=float(k), kappa_min=min(1.0, float(k)))
        for k in (1, 4, 16, 64)
    },
    **{
        f"abl_mined_fraction{int(p * 100)}": _smart(1.0, adaptive=True, mined_fraction=p) for p in (0.1, 0.25, 0.5, 1.0)
    },
    "abl_cache": _smart(1.0, adaptive=True, embedding_source="cache"),
    "abl_margin_aware": _smart(1.0, adaptive=True, selection="margin_aware"),
    "abl_margin_aware_cache": _smart(1.0, adaptive=True, selection="margin_aware", embedding_source="cache"),
    "abl_kappa_floor0.5": _smart(1.0, adaptive=True, kappa_min=0.5),
    "abl_kappa_floor0.25": _smart(1.0, adaptive=True, kappa_min=0.25),
    "abl_error_counts_mined": _smart(1.0, adaptive=True, error_counts="mined"),
    "abl_margin_dw_graph": _margin_dw(graph_batches=True),
    # The default's neighbour lists widened by sampled positives and negatives, and the lists alone (issue 15).
    "abl_wide_lists": _smart_default_with(extra_positives=64, extra_negatives=64),
    "abl_lists_only": _smart_default_with(extra_positives=0, extra_negatives=0),
}
# Every row of the first GPU runs (session 12) lost test Recall@1 after its peak (triplet rows from epoch 2-3, margin
# rows from epoch 8-10) under the protocol's constant learning rate: the same rows with the papers' step decay
# (halved every 3 epochs, as Smart Mining's protocol).
_STEP_DECAY = {"optim": {"schedule": "step", "step_size": 3, "gamma": 0.5}}


def _with_step_decay(build: Overrides) -> Overrides:
    return lambda mode: _merge(build(mode), _STEP_DECAY)


ABLATIONS.update(
    {
        "abl_step_lr_sm_default": _with_step_decay(_smart_default),
        "abl_step_lr_random": _with_step_decay(_random_triplets),
        "abl_step_lr_margin_dw": _with_step_decay(_margin_dw()),
    }
)
STUDIES: dict[str, dict[str, Overrides]] = {"main": MAIN, "ablations": ABLATIONS}
SMOKE_CONFIGS = ("sm_default", "pml_margin_dw")


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_config(mode: Mode, data_root: str, args: argparse.Namespace) -> dict:
    """The shared protocol: EfficientNet-Lite0 (ImageNet), 64-d, AdamW 1e-4 / ×10 head, wd 1e-4, margin 0.2,
    β per class by SGD 0.01, P×K = 16 × 4, triplet batches of 32, evaluation every epoch."""
    model_options = {"weights_path": str(args.weights)} if args.weights else {}
    return {
        "data": {
            "name": "cub100",
            "root": data_root,
            "image_size": mode.image_size,
            "augment": True,
            "num_workers": args.num_workers,
            "eval_batch_size": args.eval_batch_size,
            "decode_once": args.decode_once,
        },
        "model": {"backbone": "efficientnet_lite0", "pretrained": True, "embedding_dim": 64, "options": model_options},
        "loss": {"margin": 0.2, "beta": 1.2, "beta_lr": 0.01, "beta_per_class": True},
        "mining": {
            "classes_per_batch": mode.classes_per_batch,
            "samples_per_class": 4,
            "kappa": 16.0,
            "target_error": 0.5,
            "mined_fraction": 0.5,
            "triplets_per_batch": 32,
        },
        "optim": {"optimizer": "adamw", "lr": 1e-4, "head_lr_mult": 10.0, "weight_decay": 1e-4},
        "train": {"epochs": mode.epochs, "eval_every": 1, "amp": args.amp, "device": args.device, "progress": False},
        "eval": {"ks": [1, 2, 4, 8], "compute_nmi": True},
    }


def machine() -> str:
    """The device in words (GPU model when CUDA is used), for every recorded figure."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}), {os.cpu_count()} CPU cores"
    threads = torch.get_num_threads()
    return f"CPU {platform.machine()} {os.cpu_count()} cores, {threads} threads (torch {torch.__version__})"


# ----------------------------------------------------------------------------------------------------- running
def _row_subset(row: dict) -> dict:
    keep = KEPT + (
        "epoch",
        "loss",
        "train_error",
        "kappa",
        "next_kappa",
        "epoch_seconds",
        "eval_seconds",
        "mining_seconds",
        "embed_seconds",
        "index_seconds",
        "search_seconds",
        "selection_seconds",
        "mined_triplets",
        "random_triplets",
        "anchors_with_negatives",
        "images_per_second",
        "mined_planned",
        "kappa_cap",
        "t_q10",
        "t_q50",
        "t_q90",
        "list_recall",
        "target_error",
        "mined_fraction",
        "warm_start",
        "drift_recall",
        "guard_scale",
    )
    held = {k: float(v) for k, v in row.items() if k.startswith("holdout_") and v is not None}  # data.holdout_classes
    return {**{k: float(row[k]) for k in keep if row.get(k) is not None}, **held}


def run_one(name: str, seed: int, raw: dict, run_dir: Path, log: Callable[[str], None]) -> list[dict]:
    """Train configuration ``name`` (ours or a peer) with ``seed``; returns its per-epoch rows."""
    from smartmine.training.config import config_from_dict

    cfg = config_from_dict(_merge(raw, {"seed": seed, "run_dir": str(run_dir)}))
    if name.startswith("pml_"):
        return [_row_subset(r) for r in peers.PeerTrainer(name, cfg, log=log).fit()]
    from smartmine.training.trainer import Trainer

    trainer = Trainer(cfg, overwrite=True, log=lambda s: log(f"{name} {s}"))
    trainer.fit()
    return [_row_subset(r) for r in trainer.history]


def prepare_data(mode: Mode, args: argparse.Namespace) -> str:
    """The data root of ``mode``: ``--data-root`` itself, or a packed subset of it (quick and smoke modes)."""
    root = Path(args.data_root).expanduser()
    if mode.classes is None:
        return str(root)
    dest = Path(args.work_dir) / f"cub100_{mode.classes}c{mode.per_class}x{mode.short_side}"
    if not (dest / "images.txt").is_file():
        if dest.exists():
            import shutil

            shutil.rmtree(dest)
        pack_cub100.pack_dataset(
            root, dest, short_side=mode.short_side, classes=mode.classes, per_class=mode.per_class, workers=1
        )
    return str(dest)


def run_study(args: argparse.Namespace) -> Path:
    """Run every missing (configuration, seed) of the study; returns the study's results folder."""
    mode = MODES[args.mode]
    configs = _selected_configs(args)
    if any(c.startswith("pml_") for c in configs):
        peers.require_pml()
    seeds = tuple(args.seeds) if args.seeds else mode.seeds
    epochs = args.epochs or mode.epochs
    mode = Mode(**{**mode.__dict__, "epochs": epochs})
    root = prepare_data(mode, args)
    base = base_config(mode, root, args)
    out = Path(args.results_dir) / args.study
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "mode": args.mode, "epochs": epochs, "image_size": mode.image_size, "data_root": root, "machine": machine(),
        "decode_once": bool(args.decode_once),
    }  # fmt: skip
    started = time.perf_counter()
    if args.study == "main" and not args.no_baseline and not (out / "baseline_imagenet.json").exists():
        from smartmine.training.config import config_from_dict

        cfg = config_from_dict(_merge(base, {"seed": 0, "run_dir": str(Path(args.runs_dir) / "baseline")}))
        metrics = peers.untrained_baseline(cfg)
        _write_json(out / "baseline_imagenet.json", {**info, "config": "baseline_imagenet", "metrics": metrics})
        print(
            f"baseline_imagenet (1280-d ImageNet features, untrained) | recall@1 {metrics['recall@1']:.4f} | "
            f"map@r {metrics['map@r']:.4f} | nmi {metrics['nmi']:.4f}",
            flush=True,
        )
    last_run = float(args.first_run_seconds)
    # Seed by seed, configurations in the order given: a run cut short by the time budget still leaves every
    # configuration with the same seeds.
    for seed in seeds:
        for name in configs:
            overrides = STUDIES[args.study][name](mode) if name in STUDIES[args.study] else {}
            raw = _merge(base, overrides)
            path = out / f"{name}__seed{seed}.json"
            if path.exists():
                print(f"{name} seed {seed}: done already ({path})", flush=True)
                continue
            elapsed = time.perf_counter() - started
            if args.time_budget and elapsed + last_run > args.time_budget:
                print(f"{name} seed {seed}: skipped (time budget {args.time_budget}s; next run ~{last_run:.0f}s)")
                continue
            t0 = time.perf_counter()
            try:
                rows = run_one(
                    name, seed, raw, Path(args.runs_dir) / args.study / name / f"seed{seed}",
                    lambda s: print(s, flush=True),
                )  # fmt: skip
            except Exception:
                if not args.keep_going:
                    raise
                import traceback

                print(f"{name} seed {seed}: FAILED (--keep-going: next run)\n{traceback.format_exc()}", flush=True)
                continue
            last_run = time.perf_counter() - t0
            _write_json(
                path,
                {**info, "config": name, "seed": seed, "overrides": overrides, "rows": rows, "run_seconds": last_run},
            )
    return out


def _selected_configs(args: argparse.Namespace) -> list[str]:
    if args.study == "throughput":
        return []
    known = STUDIES[args.study]
    if args.configs:
        bad = [c for c in args.configs if c not in known]
        if bad:
            raise SystemExit(f"--configs: unknown for --study {args.study}: {bad} (known: {', '.join(known)})")
        return list(args.configs)
    if args.mode == "smoke":
        return [c for c in SMOKE_CONFIGS if c in known] or list(known)[:2]
    return list(known)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------- aggregation
def load_results(study_dir: Path) -> tuple[dict[str, list[dict]], dict | None]:
    """``{config: [result per seed]}`` and the baseline result (or ``None``) of a study folder."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(study_dir.glob("*__seed*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        runs.setdefault(res["config"], []).append(res)
    base = study_dir / "baseline_imagenet.json"
    return runs, (json.loads(base.read_text(encoding="utf-8")) if base.exists() else None)


def _mean_sd(values: Sequence[float], scale: float = 100.0) -> str:
    vals = [v * scale for v in values]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.fmean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def curves(results: list[dict], key: str = "recall@1") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-epoch mean and std over seeds of ``key``, and the mean cumulative training seconds (common epochs only)."""
    n = min(len(r["rows"]) for r in results)
    vals = np.array([[row.get(key, np.nan) for row in r["rows"][:n]] for r in results], dtype=float)
    secs = np.array([np.cumsum([row.get("epoch_seconds", 0.0) for row in r["rows"][:n]]) for r in results])
    return vals.mean(0), vals.std(0, ddof=1) if len(results) > 1 else np.zeros(n), secs.mean(0)


def summarize(study_dir: Path) -> str:
    """Markdown tables of a study's results (final epoch mean ± sample std over seeds; best epoch; timings)."""
    runs, baseline = load_results(study_dir)
    if not runs:
        return f"no results under {study_dir}\n"
    any_res = next(iter(runs.values()))[0]
    lines = [
        f"Mode `{any_res['mode']}`, {any_res['epochs']} epochs, {any_res['image_size']} px crops, data "
        f"`{any_res['data_root']}`; machine: {any_res['machine']}. Values ×100, mean ± sample std over seeds.",
        "",
        "| configuration | seeds | R@1 | R@2 | R@4 | R@8 | NMI | MAP@R | best-epoch R@1 | train s/epoch | "
        "mining share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if baseline is not None:
        m = baseline["metrics"]
        lines.append(
            "| ImageNet features (1280-d, untrained) | – | "
            + " | ".join(f"{100 * m[k]:.1f}" for k in METRICS)
            + " | – | – | – |"
        )
    final_r1: dict[str, float] = {}
    for name, res in runs.items():
        finals = [r["rows"][-1] for r in res]
        best = [max(row["recall@1"] for row in r["rows"]) for r in res]
        secs = [statistics.fmean(row["epoch_seconds"] for row in r["rows"]) for r in res]
        share = [
            row.get("mining_seconds", 0.0) / row["epoch_seconds"]
            for r in res
            for row in r["rows"]
            if row.get("mining_seconds") and row.get("epoch_seconds")
        ]
        final_r1[name] = statistics.fmean(f["recall@1"] for f in finals)
        cells = [_mean_sd([f[k] for f in finals]) for k in METRICS]
        lines.append(
            f"| {name} | {len(res)} | " + " | ".join(cells) + f" | {_mean_sd(best)} | "
            f"{statistics.fmean(secs):.1f} | {f'{100 * statistics.fmean(share):.0f}%' if share else '–'} |"
        )
    # Recall@1 per epoch.
    n_epochs = max(len(r["rows"]) for res in runs.values() for r in res)
    lines += [
        "",
        "Recall@1 (×100) per epoch, mean over seeds:",
        "",
        "| configuration | " + " | ".join(str(e) for e in range(1, n_epochs + 1)) + " |",
        "|---|" + "---|" * n_epochs,
    ]
    for name, res in runs.items():
        mean, _, _ = curves(res)
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in mean) + " |")
    # The goals of study 1.
    ours = {k: v for k, v in final_r1.items() if not k.startswith("pml_")}
    theirs = {k: v for k, v in final_r1.items() if k.startswith("pml_")}
    if ours and theirs:
        best_ours = max(ours, key=ours.get)
        best_peer = max(theirs, key=theirs.get)
        gap = 100 * (ours[best_ours] - theirs[best_peer])
        mean_ours, _, _ = curves(runs[best_ours])
        reach = next((e + 1 for e, v in enumerate(mean_ours) if v >= theirs[best_peer]), None)
        lines += [
            "",
            f"Best ours: `{best_ours}` {100 * ours[best_ours]:.1f}; best peer: `{best_peer}` "
            f"{100 * theirs[best_peer]:.1f}; gap {gap:+.1f} points of Recall@1 (goal: ≥ +2.0). "
            f"`{best_ours}` first reaches the peer's final Recall@1 at epoch "
            f"{reach if reach is not None else 'never'} of {n_epochs} (goal: ≤ {n_epochs / 3:.1f}).",
        ]
    if baseline is not None:
        below = [k for k, v in final_r1.items() if v <= baseline["metrics"]["recall@1"]]
        lines.append(f"Configurations not above the untrained features' Recall@1: {', '.join(below) or 'none'}.")
    return "\n".join(lines) + "\n"


def plot(study_dir: Path, plots_dir: Path, prefix: str) -> list[Path]:
    """Recall@1 against epoch and against cumulative training seconds (mean ± std band); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, baseline = load_results(study_dir)
    if not runs:
        return []
    any_res = next(iter(runs.values()))[0]
    title = f"cub100 ({any_res['mode']} mode, {any_res['image_size']} px) — {any_res['machine']}"
    if any_res["mode"] != "full":
        title = f"NOT THE STUDY: {title}"
    plots_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for xkey, xlabel in (("epoch", "epoch"), ("time", "training wall time (s)")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, res in runs.items():
            mean, sd, secs = curves(res)
            x = np.arange(1, len(mean) + 1) if xkey == "epoch" else secs
            style = "--" if name.startswith("pml_") else "-"
            ax.plot(x, 100 * mean, style, marker="o", ms=3, label=f"{name} (n={len(res)})")
            ax.fill_between(x, 100 * (mean - sd), 100 * (mean + sd), alpha=0.15)
        if baseline is not None:
            ax.axhline(100 * baseline["metrics"]["recall@1"], color="gray", ls=":", label="ImageNet features")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Recall@1 (%) on the test classes")
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = plots_dir / f"{prefix}_recall_vs_{xkey}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


# -------------------------------------------------------------------------------------------------- throughput
def throughput(args: argparse.Namespace, repeats: int = 5, steps: int = 5) -> str:
    """Images/s of a full training step (forward, mining, loss, backward, optimiser steps) on one fixed P×K batch.

    Ours: smartmine's in-batch miners and losses (distance-weighted + margin; semi-hard + triplet); the peers: PML's
    on the same model and the same batch (already on the device, so loading is excluded). Median of ``repeats`` runs
    of ``steps`` steps after two warm-up steps; the setups take turns, one run each.
    """
    import torch

    from smartmine.data.samplers import PKBatchSampler
    from smartmine.losses import MarginLoss, TripletLoss
    from smartmine.miners import DistanceWeightedMiner, SemiHardMiner
    from smartmine.training import builders
    from smartmine.training.config import config_from_dict
    from smartmine.training.runtime import seed_everything, train_device

    mode = MODES[args.mode]
    cfg = config_from_dict(
        _merge(base_config(mode, prepare_data(mode, args), args), {"run_dir": str(Path(args.runs_dir) / "throughput")})
    )
    device = train_device(cfg.train.device)
    seed_everything(0)
    data = builders.build_datasets(cfg)
    labels_np = np.asarray(data.train.labels, dtype=np.int64)
    batch_idx = next(iter(PKBatchSampler(labels_np, cfg.mining.classes_per_batch, 4, seed=0)))
    x = torch.stack([data.train[i][0] for i in batch_idx]).to(device)
    y = torch.as_tensor(labels_np[batch_idx], device=device)
    nc = int(labels_np.max()) + 1
    peers.require_pml()
    setups = {
        "ours: distance-weighted + margin": (DistanceWeightedMiner(seed=0), MarginLoss(alpha=0.2, num_classes=nc)),
        "peer: DistanceWeightedMiner + MarginLoss": peers.build_peer("pml_margin_dw", cfg, nc)[::-1],
        "ours: semi-hard + triplet": (SemiHardMiner(seed=0), TripletLoss(margin=0.2)),
        "peer: TripletMarginMiner(semihard) + TripletMarginLoss": peers.build_peer("pml_triplet_semihard", cfg, nc)[
            ::-1
        ],
    }
    use_amp = cfg.train.amp and device.type == "cuda"
    lines = [
        f"Throughput, one {len(batch_idx)}-image P×K batch at {mode.image_size} px, machine: {machine()}; "
        f"median of {repeats} × {steps} steps.",
        "",
        "| method | images/s | ms/step |",
        "|---|---|---|",
    ]
    runners = {}
    for name, (miner, loss_fn) in setups.items():
        seed_everything(0)
        model = builders.build_model(cfg, 3).to(device).train()
        loss_fn.to(device)
        params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        runners[name] = _step_fn(model, miner, loss_fn, opt, x, y, ours=name.startswith("ours"), amp=use_amp)
        for _ in range(2):  # warm-up
            runners[name]()
    # Round-robin over the setups, one repeat each in turn, so that a slow spell of a shared machine hits all alike.
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, step in runners.items():
            times[name].append(_time(step, steps, device))
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {len(batch_idx) / med:.1f} | {1000 * med:.1f} |")
    return "\n".join(lines) + "\n"


def _step_fn(model, miner, loss_fn, opt, x, y, *, ours: bool, amp: bool) -> Callable[[], None]:
    """One training step (forward, mining, loss, backward, optimiser) on the fixed batch ``x, y``."""
    import torch

    device = x.device

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            emb = model(x)
        emb = emb.float()
        # Our miners take detached embeddings (mining is not differentiated); PML's take them as they are.
        trip = miner(emb.detach(), y) if ours else miner(emb, y)
        loss = loss_fn(emb, y, trip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step: Callable[[], None], steps: int, device) -> float:
    """Seconds per step over ``steps`` consecutive steps."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=tuple(MODES), default="full")
    p.add_argument("--quick", action="store_const", const="quick", dest="mode", help="same as --mode quick")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="same as --mode smoke")
    p.add_argument("--study", choices=("main", "ablations", "throughput"), default="main")
    p.add_argument("--configs", nargs="+", help="run only these configurations (default: all of the study)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the mode's: full 0 1 2, else 0)")
    p.add_argument("--epochs", type=int, help="override the mode's epochs")
    p.add_argument("--data-root", default=str(SHARED_CUB100), help="cub100 folder (or a packed copy)")
    p.add_argument("--weights", help="EfficientNet-Lite0 weights (e.g. the fp16 .devdata/efficientnet_lite0_fp16.pth)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA (all configurations alike)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: 0 on CPU, 10 on CUDA)")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--runs-dir", default=None, help="run folders (default runs/cub100_study/<mode>)")
    p.add_argument(
        "--results-dir",
        default=None,
        help="result JSONs (default benchmarks/results/cub100/<mode> for full, else runs/...)",
    )
    p.add_argument("--work-dir", default=str(REPO / ".devdata"), help="where quick/smoke pack their data subset")
    p.add_argument("--plots-dir", default=None, help="plots (default docs/ for full and quick; none for smoke)")
    p.add_argument("--time-budget", type=float, default=None, help="start no run that would end after this (s)")
    p.add_argument(
        "--decode-once", action="store_true", help="data.decode_once: decode the images once, crop on the device"
    )
    p.add_argument(
        "--first-run-seconds", type=float, default=0.0, help="--time-budget: length assumed for the first run (s)"
    )
    p.add_argument("--keep-going", action="store_true", help="a run that fails is reported and skipped")
    p.add_argument("--no-baseline", action="store_true", help="skip the untrained-features baseline")
    p.add_argument("--aggregate-only", action="store_true", help="only write tables and plots from results")
    p.add_argument("--repeats", type=int, default=5, help="throughput: timed runs per setup (the median counts)")
    p.add_argument("--steps", type=int, default=5, help="throughput: training steps per timed run")
    args = p.parse_args(argv)
    if args.num_workers is None:
        import torch

        args.num_workers = 10 if torch.cuda.is_available() and args.device in ("auto", "cuda") else 0
    if args.runs_dir is None:
        args.runs_dir = str(REPO / "runs" / "cub100_study" / args.mode)
    if args.results_dir is None:
        args.results_dir = str(
            REPO / ("benchmarks/results/cub100" if args.mode in ("full", "cpu") else "runs/cub100_results") / args.mode
        )
    if args.plots_dir is None and args.mode != "smoke":
        args.plots_dir = str(REPO / "docs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.study == "throughput":
        print(throughput(args, repeats=args.repeats, steps=args.steps), flush=True)
        return 0
    study_dir = Path(args.results_dir) / args.study
    if not args.aggregate_only:
        run_study(args)
    text = summarize(study_dir)
    (study_dir.parent / f"{args.study}_summary.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    if args.plots_dir:
        prefix = (
            "cub100"
            + ("" if args.mode == "full" else f"_{args.mode}")
            + ("" if args.study == "main" else f"_{args.study}")
        )
        for path in plot(study_dir, Path(args.plots_dir), prefix):
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
