"""The mining study on the CPU (issue 15): does smart mining train better embeddings than random triplets?

Every configuration trains the quick start's model (small CNN, 64-d) with its optimiser on a *harder* glyph task than
the quick start's, the same for all: heavier distortion (rotation up to 25°, shift up to 4 px) and 8 epochs, so that
methods differ (the quick start's own task ends near Recall@1 0.96 for everything). Same data and seeds for all
configurations; evaluation every epoch on the unseen half of the characters.

Configurations (``CONFIGS``): ratio triplet + global loss on uniformly random triplets; the paper's Triplet + FANNG
(strict, fixed κ), + Global, + Adaptive (the paper's controller, as it was); the default smart mining (its batches
also mined in the batch) and the same with the plan's triplets only; random triplets with dense batches; margin +
distance-weighted (ours; random and graph-composed batches); semi-hard + triplet (ours, in-batch); and
pytorch-metric-learning's margin + DistanceWeightedMiner and TripletMarginLoss + TripletMarginMiner("semihard") on the
same model and data (``benchmarks/peers.py``). With ``--holdout-classes H`` every configuration trains without ``H``
training classes, scores them after every epoch and picks best.pt on their MAP@R; ``smart_plan_guarded`` (smart
mining with the plan's triplets only + ``mining.holdout_patience: 2``) needs it.

A run writes ``<results-dir>/<config>__seed<S>.json`` and is skipped when that file exists, so the study can be run
in slices; ``--aggregate-only`` writes ``<results-dir>/summary.md`` and the curves plot. Commands: docs/BENCHMARKS.md,
"Mining study (glyphs, CPU)".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cub100_study  # noqa: E402  (run_one, machine, result files)
import peers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STUDY_RESULTS = REPO / "benchmarks" / "results" / "mining_study"
"""The study's own results folder: the one whose curves are docs/mining_study_curves.png."""
EPOCHS = 8
WARMUP = 2
METRICS = ("recall@1", "map@r", "nmi")
SMART_KEYS = ("kappa", "train_error", "mined_triplets", "mined_planned", "t_q50", "list_recall", "kappa_cap")

# The harder glyph task (same for every configuration).
TASK = {
    "data": {"name": "glyphs", "augment": True, "options": {"max_rotation": 25, "max_shift": 4}},
    "train": {"epochs": EPOCHS, "eval_every": 1, "progress": False},
    "eval": {"raw_pixel_baseline": False},
}


def _smart(global_weight: float, **mining) -> dict:
    # The paper's configurations train on the plan's triplets only.
    m = {"strategy": "smart", "index": "fanng", "warmup_epochs": WARMUP, "batch_mining": "none", **mining}
    return {"loss": {"name": "ratio_triplet", "global_weight": global_weight}, "mining": m}


def _in_batch(loss: str, strategy: str, **mining) -> dict:
    return {"loss": {"name": loss, "global_weight": 0.0}, "mining": {"strategy": strategy, **mining}}


PAPER_FIXED = {"adaptive": False, "kappa": 4.0, "selection": "strict", "controller": "legacy"}
CONFIGS: dict[str, dict] = {
    "random_global": {
        "loss": {"name": "ratio_triplet", "global_weight": 1.0},
        # every epoch random: no index, no embedding pass; the plan's triplets only
        "mining": {"strategy": "smart", "warmup_epochs": EPOCHS, "batch_mining": "none"},
    },
    "smart_default": _smart(1.0),  # whatever the shipped defaults are (mining.* not set here)
    "fanng_strict": _smart(0.0, **PAPER_FIXED),
    "fanng_strict_global": _smart(1.0, **PAPER_FIXED),
    "fanng_global_adaptive_legacy": _smart(1.0, adaptive=True, kappa=16.0, selection="strict", controller="legacy"),
    "margin_dw": _in_batch("margin", "distance_weighted"),
    "margin_dw_graph": _in_batch("margin", "distance_weighted", graph_batches=True, warmup_epochs=WARMUP),
    "semihard_triplet": _in_batch("triplet", "semihard"),
    "pml_margin_dw": {},
    "pml_triplet_semihard": {},
    # The shipped smart mining with the plan's triplets only (mining.batch_mining: none; the default until session 6).
    "smart_plan": {},
    # Needs --holdout-classes: smart_plan + the held-out guard (its defaults, fixed before any run).
    "smart_plan_guarded": {},
    # Random triplets with the batches also mined in the batch, as the default smart mining does.
    "random_dense": {
        "loss": {"name": "ratio_triplet", "global_weight": 1.0},
        "mining": {"strategy": "smart", "warmup_epochs": EPOCHS, "batch_mining": "semihard"},
    },
}


def base_config() -> dict:
    """The quick start's config with the study's task."""
    import yaml

    raw = yaml.safe_load((REPO / "src" / "smartmine" / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    mining = raw.pop("mining", {})
    # Keep the quick start's batch shape for every strategy; its smart-mining keys stay with the smart configs.
    raw["mining"] = {k: v for k, v in mining.items() if k in ("triplets_per_batch",)}
    return cub100_study._merge(raw, TASK)


def config_for(name: str, holdout_classes: int = 0) -> dict:
    """The resolved config of study configuration ``name``; ``holdout_classes`` > 0 sets that many training classes
    aside (the same for every configuration of a seed) and picks best.pt on their MAP@R."""
    raw = cub100_study._merge(base_config(), CONFIGS[name])
    if name in ("smart_default", "smart_plan", "smart_plan_guarded"):  # the shipped preset's smart-mining keys
        import yaml

        qs = yaml.safe_load((REPO / "src" / "smartmine" / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
        raw["mining"] = cub100_study._merge(qs["mining"], {"warmup_epochs": WARMUP})
    if name in ("smart_plan", "smart_plan_guarded"):
        raw["mining"]["batch_mining"] = "none"
    if name == "smart_plan_guarded":
        if not holdout_classes:
            raise SystemExit("smart_plan_guarded needs --holdout-classes")
        raw["mining"]["holdout_patience"] = 2
    if holdout_classes:
        raw = cub100_study._merge(raw, {"data": {"holdout_classes": holdout_classes},
                                        "train": {"best_metric": "holdout_map@r"}})  # fmt: skip
    return raw


def run(args: argparse.Namespace) -> None:
    configs = args.configs or list(CONFIGS)
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        raise SystemExit(f"--configs: unknown {bad} (known: {', '.join(CONFIGS)})")
    if any(c.startswith("pml_") for c in configs):
        peers.require_pml()
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = _parse_sets(args.set or [])
    for base_name in configs:
        name = f"{base_name}+{args.tag}" if args.tag else base_name
        for seed in args.seeds:
            path = out / f"{name}__seed{seed}.json"
            if path.exists():
                print(f"{name} seed {seed}: done already", flush=True)
                continue
            raw = config_for(base_name, args.holdout_classes)
            if args.epochs is not None:  # e.g. an in-batch peer given the image budget of the triplet batches
                if raw["mining"].get("warmup_epochs") == EPOCHS:  # random triplets throughout stay random throughout
                    raw["mining"]["warmup_epochs"] = args.epochs
                raw = cub100_study._merge(raw, {"train": {"epochs": args.epochs}})
            raw = cub100_study._merge(raw, overrides)  # after --epochs: an explicit --set always wins
            t0 = time.perf_counter()
            rows = cub100_study.run_one(
                name, seed, raw, Path(args.runs_dir) / name / f"seed{seed}", lambda s: print(s, flush=True)
            )
            info = {"config": name, "seed": seed, "resolved": raw, "machine": cub100_study.machine(),
                    "run_seconds": time.perf_counter() - t0, "rows": rows}  # fmt: skip
            cub100_study._write_json(path, info)
            final = rows[-1]
            print(f"{name} seed {seed}: " + " | ".join(f"{k} {final.get(k, float('nan')):.4f}" for k in METRICS),
                  flush=True)  # fmt: skip


def _parse_sets(items: list[str]) -> dict:
    """``["mining.kappa_min=0.25", ...]`` -> a nested dict (values parsed as YAML) to merge over a configuration."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected KEY=VALUE, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


# ------------------------------------------------------------------------------------------------- aggregation
def _load(results_dir: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(results_dir.glob("*__seed*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        runs.setdefault(res["config"], []).append(res)
    order = {name: i for i, name in enumerate(CONFIGS)}  # study order first, tagged explorations after their base
    return dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0].split("+")[0], len(order)), kv[0])))


def _curve(res: list[dict], key: str) -> np.ndarray:
    n = min(len(r["rows"]) for r in res)
    return np.array([[row.get(key, np.nan) for row in r["rows"][:n]] for r in res], dtype=float)


def summarize(results_dir: Path) -> str:
    runs = _load(results_dir)
    if not runs:
        return f"no results under {results_dir}\n"
    any_res = next(iter(runs.values()))[0]
    lines = [
        f"Glyphs, rotation ≤ 25°, shift ≤ 4 px, {any_res['resolved']['train']['epochs']} epochs, small CNN 64-d; "
        f"machine: {any_res['machine']}. "
        "Final epoch, ×100, mean ± sample std over seeds.",
        "",
        "| configuration | seeds | MAP@R | Recall@1 | NMI | epochs to random's final R@1 | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    held = any("holdout_map@r" in r["rows"][0] for res in runs.values() for r in res)
    if held:  # the test metrics of the epoch each run's held-out classes pick (best.pt), next to the final ones
        lines[0] += " Selected: the test metrics at each run's best held-out MAP@R epoch (best.pt; mean epoch)."
        lines[2] += " selected MAP@R | selected R@1 (epoch) |"
        lines[3] += "---|---|"
    ref = None
    if "random_global" in runs:
        ref = float(np.mean([r["rows"][-1]["recall@1"] for r in runs["random_global"]]))
    for name, res in runs.items():
        cells = [cub100_study._mean_sd([r["rows"][-1][k] for r in res]) for k in ("map@r", "recall@1", "nmi")]
        reach = "–"
        if ref is not None:
            mean = np.nanmean(_curve(res, "recall@1"), axis=0)
            hit = [e + 1 for e, v in enumerate(mean) if v >= ref]
            reach = str(hit[0]) if hit else "never"
        secs = statistics.fmean(r["run_seconds"] for r in res)
        line = f"| {name} | {len(res)} | " + " | ".join(cells) + f" | {reach} | {secs:.0f} |"
        if held:
            picks = [max(r["rows"], key=lambda row: row["holdout_map@r"]) for r in res]
            line += (f" {cub100_study._mean_sd([p['map@r'] for p in picks])} |"
                     f" {cub100_study._mean_sd([p['recall@1'] for p in picks])}"
                     f" ({statistics.fmean(p['epoch'] for p in picks):.1f}) |")  # fmt: skip
        lines.append(line)
    # Per-epoch controller view of the smart-mining configurations.
    for name, res in runs.items():
        if not any(r["rows"][-1].get("kappa") is not None for r in res):
            continue
        lines += ["", f"`{name}` per epoch (mean over seeds): κ, training error, mined / planned, planned mined share "
                  "of the epoch's triplets, t_a median, list recall, index seconds (warm-started epochs / all), "
                  "Recall@1", "",
                  "| epoch | κ | error | mined/planned | mined share | t_a q50 | list recall | index s (warm) | R@1 |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        n = min(len(r["rows"]) for r in res)
        for e in range(n):
            rows = [r["rows"][e] for r in res]

            def mean(key: str, rows: list[dict] = rows) -> float | None:
                vals = [row[key] for row in rows if row.get(key) is not None]
                return statistics.fmean(vals) if vals else None

            planned = mean("mined_planned")
            fill = f"{mean('mined_triplets') / planned:.2f}" if planned else "–"

            def fmt(v: float | None, spec: str = ".3g") -> str:
                return "–" if v is None else format(v, spec)

            warm = [row.get("warm_start") for row in rows if row.get("warm_start") is not None]
            index_s = fmt(mean("index_seconds"), ".2f") + (f" ({int(sum(warm))}/{len(warm)})" if warm else "")
            lines.append(
                f"| {e + 1} | {fmt(mean('kappa'))} | {fmt(mean('train_error'), '.3f')} | {fill} | "
                f"{fmt(mean('mined_fraction'), '.2f')} | {fmt(mean('t_q50'))} | {fmt(mean('list_recall'), '.2f')} | "
                f"{index_s if mean('kappa') is not None else '–'} | {fmt(mean('recall@1'), '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def plot(results_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _load(results_dir)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, res in runs.items():
        for ax, key in zip(axes, ("map@r", "recall@1"), strict=True):
            vals = _curve(res, key)
            x = np.arange(1, vals.shape[1] + 1)
            mean = np.nanmean(vals, axis=0)
            ax.plot(x, mean, marker="o", ms=3, label=name, lw=2.2 if name == "smart_default" else 1.2)
            if vals.shape[0] > 1:
                sd = np.nanstd(vals, axis=0, ddof=1)
                ax.fill_between(x, mean - sd, mean + sd, alpha=0.12)
    for ax, key in zip(axes, ("MAP@R", "Recall@1"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{key} (unseen classes)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Mining study: harder glyphs, small CNN, mean ± sd over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_plot_path(results_dir: Path) -> Path:
    """Where the curves go without ``--plot``: the documented plot only for the study's own results folder."""
    if results_dir.resolve() == STUDY_RESULTS.resolve():
        return REPO / "docs" / "mining_study_curves.png"
    return results_dir / "curves.png"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="*", help=f"subset of: {', '.join(CONFIGS)}")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--results-dir", default=str(STUDY_RESULTS))
    ap.add_argument("--runs-dir", default="/tmp/smartmine-mining-study")
    ap.add_argument("--holdout-classes", type=int, default=0,
                    help="training classes set aside, scored every epoch (best.pt on them); for smart_plan_guarded")
    ap.add_argument("--epochs", type=int, help=f"train this many epochs instead of {EPOCHS} (use a separate "
                    "--results-dir)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="exploration: override a config key of every configuration run (needs --tag)")
    ap.add_argument("--tag", help="suffix of the configuration name in result files: NAME+TAG__seedS.json")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--plot", help="curves plot (default: docs/mining_study_curves.png for the study's own results "
                    "folder, <results-dir>/curves.png for any other, so side runs never replace the documented plot)")
    args = ap.parse_args(argv)
    if args.set and not args.tag:
        ap.error("--set needs --tag, so that overridden runs never land in the plain configuration's files")
    if not args.aggregate_only:
        run(args)
    results = Path(args.results_dir)
    text = summarize(results)
    if results.exists():
        (results / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    if results.exists() and any(results.glob("*__seed*.json")):
        plot(results, Path(args.plot) if args.plot else default_plot_path(results))


if __name__ == "__main__":
    main()
