"""Smart mining on real photos, on a CPU: an embedding head trained over frozen ImageNet features of cub100.

Fine-tuning EfficientNet-Lite0 on cub100 takes a GPU; the reduced CPU fine-tuning run of docs/BENCHMARKS.md (128 px,
4 epochs) ends *below* the untrained features, so it measures damage, not learning. Here the backbone is frozen: every
image of ``--data-root`` is embedded once (test-time resize and centre crop, 1280-d, the offline ImageNet weights,
cached in ``--features``), and a head (MLP 1280 → 512 → 64, L2-normalised) is trained on the 50 training classes with
the library's own parts — ``SmartMiner`` and the steered controller from the config (``builders.build_smart_miner``),
the configured loss (``builders.build_loss``), the in-batch miners, the P×K sampler — and evaluated on the 50 unseen
classes with ``retrieval_metrics``. Same features, head initialisation (per seed), optimiser (AdamW 1e-3, weight
decay 1e-4) and epochs for every configuration:

- ``random_global``: ratio triplet + global loss on uniformly random dataset-wide triplets (one per training image);
- ``smart_default``: the shipped smart mining (semihard, steered κ from ``auto``, FANNG lists, warm start, batches
  also mined in the batch), one random warm-up epoch, ratio triplet + global loss;
- ``smart_paper``: the paper's system (strict Algorithm 1, its adaptive controller from κ₀ = 16), same loss;
- ``margin_dw``: our margin loss (learned β) + distance-weighted sampling on P×K = 16 × 4 batches;
- ``pml_margin_dw``: pytorch-metric-learning's ``MarginLoss`` + ``DistanceWeightedMiner`` on the same batches;
- ``smart_plan``: ``smart_default`` with the plan's triplets only (``mining.batch_mining: none``, the default until
  session 6); ``random_dense``: ``random_global`` with every triplet batch also mined in the batch, as the default;
- ``smart_plan_guarded`` (needs ``--holdout-classes``): ``smart_plan`` + the held-out guard (patience 2).

Dataset-wide configurations see one triplet per training image per epoch (64 triplets a batch); in-batch ones one pass
over the images per epoch. Not a substitute for the GPU study (a frozen backbone is another regime), but real photos,
several seeds, minutes on two cores::

    python benchmarks/cub100_frozen.py --seeds 0 1 2          # features cached on the first run (~5 min at 224 px)
    python benchmarks/cub100_frozen.py --aggregate-only

``--set KEY=VALUE`` overrides a config key of every run (e.g. ``--set mining.index=exact``) and ``--tag T`` names the
results ``NAME+T`` (session 25's list-recall runs); the rows keep each mined epoch's list recall and index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules

CONFIGS = ("random_global", "smart_default", "smart_plan", "smart_plan_guarded", "smart_paper", "margin_dw",
           "pml_margin_dw", "random_dense")
METRICS = ("recall@1", "map@r", "nmi")
MINING_STATS = ("kappa", "mined_triplets", "mined_planned", "mined_fraction", "list_recall", "index_seconds",
                "drift_recall", "index")  # fmt: skip
"""Per mined epoch, what ``SmartMiner.plan_epoch`` reports that a result row keeps."""


def load_features(path: Path, data_root: str, image_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(features (N, 1280), labels (N,), n_train)``: train split first; computed once and cached in ``path``."""
    if not path.exists():
        from cub100_embeddings import backbone_features
        from smartmine.training import builders
        from smartmine.training.config import config_from_dict

        cfg = config_from_dict({"data": {"name": "cub100", "root": data_root, "image_size": image_size,
                                         "augment": False}})  # fmt: skip
        n_train = len(builders.build_datasets(cfg).train_eval)
        feats, labels = backbone_features(data_root, image_size, 64)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, features=feats.astype(np.float32), labels=labels, n_train=n_train, image_size=image_size)
    z = np.load(path)
    return z["features"], z["labels"], int(z["n_train"])


def base_config(name: str, seed: int, overrides: dict | None = None):
    """The run config of configuration ``name``; ``overrides`` (nested keys, as ``--set`` gives them) merged last."""
    from cub100_study import _merge
    from smartmine.training.config import config_from_dict

    raw: dict = {
        "seed": seed,
        "loss": {"name": "ratio_triplet", "margin": 0.2, "global_weight": 1.0},
        "mining": {"strategy": "smart", "index": "fanng", "warmup_epochs": 1, "triplets_per_batch": 64},
    }
    if name in ("random_global", "random_dense"):
        raw["mining"]["warmup_epochs"] = 10**6  # never leaves the random warm-up
    if name in ("random_global", "smart_plan", "smart_plan_guarded", "smart_paper"):
        raw["mining"]["batch_mining"] = "none"  # the plan's triplets only
    if name == "random_dense":
        raw["mining"]["batch_mining"] = "semihard"  # each triplet batch also mined in the batch, as the default does
    elif name == "smart_paper":
        raw["mining"].update(selection="strict", controller="legacy", kappa=16.0, error_counts="all")
    elif name in ("margin_dw", "pml_margin_dw"):
        raw["loss"] = {"name": "margin", "margin": 0.2, "beta": 1.2, "global_weight": 0.0}
        raw["mining"] = {"strategy": "distance_weighted", "classes_per_batch": 16, "samples_per_class": 4}
    return config_from_dict(_merge(raw, overrides or {}))


class Head(torch.nn.Module):
    """MLP (``hidden > 0``) or linear map over frozen features, L2-normalised output."""

    def __init__(self, dim_in: int, dim_out: int = 64, hidden: int = 512) -> None:
        super().__init__()
        if hidden > 0:
            layers = [torch.nn.Linear(dim_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim_out)]
        else:
            layers = [torch.nn.Linear(dim_in, dim_out)]
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.net(x), dim=1)


def evaluate(head: Head, feats: torch.Tensor, labels: np.ndarray, seed: int) -> dict:
    from smartmine.evaluation import retrieval_metrics

    with torch.no_grad():
        emb = head(feats)
    out = retrieval_metrics(emb, labels, ks=(1,), compute_nmi=True, seed=seed)
    return {k: float(out[k]) for k in METRICS}


def run_one(
    name: str,
    seed: int,
    x: np.ndarray,
    y: np.ndarray,
    n_train: int,
    epochs: int,
    hidden: int,
    holdout: int = 0,
    overrides: dict | None = None,
    tag: str | None = None,
) -> dict:
    """Train and evaluate configuration ``name`` (``overrides`` merged into its config; results named
    ``name+tag`` when ``tag`` is given)."""
    from smartmine.data.splits import holdout_rows
    from smartmine.smart import HoldoutGuard
    from smartmine.smart.controller import training_error
    from smartmine.training import builders

    torch.manual_seed(seed)
    cfg = base_config(name, seed, overrides)
    x_tr, y_tr = x[:n_train], y[:n_train]
    xh = yh = None
    if holdout:  # the same classes for every configuration of a seed
        held = holdout_rows(y_tr, holdout, seed)
        xh, yh = torch.from_numpy(x_tr[held]), y_tr[held]
        x_tr, y_tr = x_tr[~held], np.unique(y_tr[~held], return_inverse=True)[1].astype(np.int64)
    elif name == "smart_plan_guarded":
        raise SystemExit("smart_plan_guarded needs --holdout-classes")
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    xe, ye = torch.from_numpy(x[n_train:]), y[n_train:]
    head = Head(x.shape[1], hidden=hidden)
    num_classes = int(np.unique(y_tr).size)
    if name == "pml_margin_dw":
        import peers

        loss_fn, miner = peers.build_peer(name, cfg, num_classes)
    else:
        loss_fn = builders.build_loss(cfg, num_classes)
    params = list(head.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    rows, t_start = [], time.perf_counter()
    smart = cfg.mining.strategy == "smart"
    if smart:
        sm = builders.build_smart_miner(cfg, torch.device("cpu"), len(y_tr))
        batch_miners = builders.build_batch_miner_factory(cfg)
        if name == "smart_plan_guarded":
            sm.holdout_guard = HoldoutGuard()  # defaults fixed before any run: patience 2, factor 0.5
    else:
        from smartmine.data.samplers import PKBatchSampler

        sampler = PKBatchSampler(yt.numpy(), 16, 4, seed=seed)
        in_batch = None if name == "pml_margin_dw" else builders.build_in_batch_miner(cfg, seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        row: dict = {"epoch": epoch + 1}
        if smart:
            with torch.no_grad():
                emb_all = head(xt)
            plan, stats = sm.plan_epoch(None if sm.is_warmup(epoch) else emb_all, yt.numpy(), epoch)
            row.update({k: stats.get(k) for k in MINING_STATS})
            active_parts, mined_parts = [], []
            batch_miner = batch_miners(seed * 1000 + epoch) if batch_miners is not None else None
            for lo in range(0, len(plan), 64):
                sl = slice(lo, lo + 64)
                idx = np.concatenate([plan.a[sl], plan.p[sl], plan.n[sl]])
                uniq, inv = np.unique(idx, return_inverse=True)
                m = len(plan.a[sl])
                trip = tuple(torch.from_numpy(inv[i * m : (i + 1) * m]) for i in range(3))
                emb = head(xt[uniq])
                lab = yt[uniq]
                if batch_miner is not None:  # the plan's triplets first, then the batch's own (never counted)
                    extra = batch_miner(emb.detach(), lab)
                    trained = tuple(torch.cat([t, e]) for t, e in zip(trip, extra, strict=True))
                else:
                    trained = trip
                loss = loss_fn(emb, lab, trained)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    active_parts.append(loss_fn.active(emb.detach(), lab, trip).float())
                mined_parts.append(torch.from_numpy(plan.is_mined[sl]))
            active, is_mined = torch.cat(active_parts), torch.cat(mined_parts)
            count = cfg.mining.error_counts
            err = training_error(active, is_mined, count=count) if not sm.is_warmup(epoch) else None
            row["train_error"] = err
            sm.update_error(err)
        else:
            sampler.set_epoch(epoch)
            for batch in sampler:
                b = torch.as_tensor(batch)
                emb, lab = head(xt[b]), yt[b]
                if name == "pml_margin_dw":
                    loss = loss_fn(emb, lab, miner(emb, lab))
                else:
                    loss = loss_fn(emb, lab, in_batch(emb.detach(), lab))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        row["train_seconds"] = time.perf_counter() - t0
        if xh is not None:
            row.update({f"holdout_{k}": v for k, v in evaluate(head, xh, yh, seed).items()})
            if smart and sm.holdout_guard is not None:
                row["guard_scale"] = sm.update_holdout(row["holdout_map@r"])
        row.update(evaluate(head, xe, ye, seed))
        rows.append(row)
        print(f"{name} seed {seed} epoch {epoch + 1} | " + " | ".join(
            f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float) and k != "epoch"), flush=True)  # fmt: skip
    return {"config": f"{name}+{tag}" if tag else name, "seed": seed, "epochs": epochs, "hidden": hidden,
            "holdout_classes": holdout, "run_seconds": time.perf_counter() - t_start, "rows": rows}  # fmt: skip


def summarize(results: Path, baseline: dict | None) -> str:
    runs: dict[str, list[dict]] = {}
    for f in sorted(results.glob("*__seed*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["config"], []).append(r)
    held = any("holdout_map@r" in r["rows"][0] for rs in runs.values() for r in rs)
    lines = ["Final epoch, ×100, mean ± sample std over seeds; best epoch in brackets (mean curve)."
             + (" Selected: the test metrics at each run's best held-out MAP@R epoch (mean epoch in brackets)."
                if held else ""), "",
             "| configuration | seeds | MAP@R | Recall@1 | NMI | best mean R@1 (epoch) | s/run |"
             + (" selected MAP@R | selected R@1 |" if held else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if held else "")]  # fmt: skip
    if baseline:
        lines.append(f"| untrained features (1280-d, no head) | – | {100 * baseline['map@r']:.1f} | "
                     f"{100 * baseline['recall@1']:.1f} | {100 * baseline['nmi']:.1f} | – | – |")  # fmt: skip
    for name in [c for c in CONFIGS if c in runs] + sorted(set(runs) - set(CONFIGS)):  # tagged runs last
        res = runs.get(name)
        if not res:
            continue

        def cell(key: str, res: list[dict] = res) -> str:
            v = [100 * r["rows"][-1][key] for r in res]
            return f"{statistics.fmean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")

        curve = np.mean([[row["recall@1"] for row in r["rows"]] for r in res], axis=0)
        secs = statistics.fmean(r["run_seconds"] for r in res)
        line = (f"| {name} | {len(res)} | {cell('map@r')} | {cell('recall@1')} | {cell('nmi')} | "
                f"{100 * curve.max():.1f} ({int(curve.argmax()) + 1}) | {secs:.0f} |")  # fmt: skip
        if held:
            picks = [max(r["rows"], key=lambda row: row["holdout_map@r"]) for r in res]
            for key in ("map@r", "recall@1"):
                v = [100 * p[key] for p in picks]
                line += f" {statistics.fmean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")
                line += f" ({statistics.fmean(p['epoch'] for p in picks):.0f}) |" if key == "recall@1" else " |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "cub100"))
    p.add_argument("--features", default=str(REPO / ".devdata" / "cub100_lite0_features_224.npz"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=512, help="hidden width of the MLP head; 0: a linear head")
    p.add_argument("--holdout-classes", type=int, default=0,
                   help="training classes set aside, scored after every epoch; smart_plan_guarded needs it")
    p.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results" / "cub100_frozen"))
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key of every run, e.g. --set mining.index=exact (repeatable; YAML values)")
    p.add_argument("--tag", help="suffix of the configuration name in result files: NAME+TAG__seedS.json")
    args = p.parse_args(argv)
    from mining_study import _parse_sets

    overrides = _parse_sets(args.set or [])
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    x, y, n_train = load_features(Path(args.features), args.data_root, args.image_size)
    base_path = results / "baseline.json"
    if not base_path.exists():
        from smartmine.evaluation import retrieval_metrics

        out = retrieval_metrics(torch.from_numpy(x[n_train:]), y[n_train:], ks=(1,), compute_nmi=True, seed=0)
        base_path.write_text(json.dumps({k: float(out[k]) for k in METRICS}, indent=1))
    if not args.aggregate_only:
        torch.set_num_threads(2)
        for seed in args.seeds:
            for name in args.configs:
                res = run_one(name, seed, x, y, n_train, args.epochs, args.hidden, args.holdout_classes, overrides,
                              args.tag)  # fmt: skip
                (results / f"{res['config']}__seed{seed}.json").write_text(json.dumps(res, indent=1))
    head = f"MLP head 1280-{args.hidden}-64" if args.hidden else "linear head 1280-64"
    text = (f"cub100, EfficientNet-Lite0 ImageNet features at {args.image_size} px (frozen), {head}, "
            f"{n_train} training images of 50 classes"
            + (f" ({args.holdout_classes} of them held out, not trained on)" if args.holdout_classes else "")
            + f", {len(y) - n_train} test images of 50 unseen classes.\n\n"
            + summarize(results, json.loads(base_path.read_text())))  # fmt: skip
    (results / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
