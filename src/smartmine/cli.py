"""The ``smartmine`` command line: quickstart, train, eval, embed, report."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

PRESET_DIR = "configs"

METRIC_ORDER = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "precision@1", "nmi")


def preset_path(name: str) -> Path:
    """Path of a preset shipped with the package (``quickstart`` → ``smartmine/configs/quickstart.yaml``)."""
    return Path(str(resources.files("smartmine") / PRESET_DIR / f"{name}.yaml"))


def list_presets() -> list[str]:
    folder = resources.files("smartmine") / PRESET_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(text: str) -> Path:
    """A config argument is a YAML path or the name of a shipped preset."""
    p = Path(text)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = preset_path(text)
    if candidate.exists():
        return candidate
    raise SystemExit(f"error: '{text}' is neither a config file nor a preset (presets: {', '.join(list_presets())})")


def results_table(model: dict, baseline: dict | None, title: str = "smartmine") -> str:
    """A Markdown table of the final test metrics, next to the raw-pixel baseline when given."""
    keys = [k for k in METRIC_ORDER if k in model] + [k for k in model if k not in METRIC_ORDER and _metric(k)]
    if baseline:
        lines = [f"| metric (unseen classes) | {title} | raw pixels | difference |", "|---|---|---|---|"]
        for k in keys:
            b = baseline.get(k)
            diff = f"{model[k] - b:+.3f}" if b is not None else ""
            lines.append(f"| {k} | {model[k]:.3f} | {b:.3f} | {diff} |" if b is not None else
                         f"| {k} | {model[k]:.3f} | | |")
    else:
        lines = [f"| metric (unseen classes) | {title} |", "|---|---|"]
        lines += [f"| {k} | {model[k]:.3f} |" for k in keys]
    return "\n".join(lines)


def _metric(key: str) -> bool:
    return key.startswith("recall@") or key in ("nmi", "map@r", "r_precision", "precision@1")


def _fresh_run_dir(base: Path) -> Path:
    if not base.exists() or not any(base.iterdir()):
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def _train(config_path: Path, overrides: list[str], *, resume: bool, overwrite: bool, run_dir: str | None) -> dict:
    from smartmine.training.config import load_config
    from smartmine.training.trainer import Trainer

    if run_dir is not None:
        overrides = [*overrides, f"run_dir={run_dir}"]
    cfg = load_config(config_path, overrides)
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    final = trainer.fit()
    return {"run_dir": str(trainer.run_dir), "final": final, "is_main": trainer.dist.is_main}


def cmd_quickstart(args: argparse.Namespace) -> int:
    import time

    run_dir = _fresh_run_dir(Path(args.run_dir))
    overrides = list(args.set or [])
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    print(f"smartmine quickstart: glyphs (characters rendered from matplotlib's fonts), smart mining + global loss "
          f"+ adaptive κ; run folder {run_dir}")
    t0 = time.perf_counter()
    out = _train(preset_path("quickstart"), overrides, resume=False, overwrite=False, run_dir=str(run_dir))
    _finish(Path(out["run_dir"]), out["final"], time.perf_counter() - t0, report=not args.no_report)
    return 0


def _finish(run_dir: Path, final: dict, seconds: float | None = None, *, report: bool = True) -> None:
    baseline = None
    if (run_dir / "baseline.json").exists():
        baseline = json.loads((run_dir / "baseline.json").read_text())
    metrics = {k: float(v) for k, v in final.items() if _metric(k)}
    table = results_table(metrics, baseline)
    (run_dir / "results.md").write_text(table + "\n", encoding="utf-8")
    when = f" in {seconds:.0f} s" if seconds is not None else ""
    print(f"\nFinished{when}. Test metrics on classes never seen in training:\n\n{table}\n")
    print(f"Run folder: {run_dir} (config.yaml, metrics.csv, checkpoints/, results.md, report.html)")
    if report:
        try:
            from smartmine.report import build_report

            print(f"Report: {build_report([run_dir])}")
        except Exception as exc:  # noqa: BLE001 - the run itself succeeded; the report can be rebuilt later
            print(f"warning: the report could not be built ({exc}); retry with: smartmine report {run_dir}",
                  file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    out = _train(resolve_config_path(args.config), list(args.set or []), resume=args.resume,
                 overwrite=args.overwrite, run_dir=args.run_dir)
    if out["is_main"]:
        _finish(Path(out["run_dir"]), out["final"], report=not args.no_report)
    return 0


def _checkpoint_path(target: str) -> Path:
    p = Path(target)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).exists():
                return p / "checkpoints" / name
        raise SystemExit(f"error: no checkpoint in '{p / 'checkpoints'}' (expected best.pt or last.pt)")
    if not p.exists():
        raise SystemExit(f"error: '{p}' does not exist")
    return p


def _load_model(ckpt_path: Path, device: str):
    from smartmine.training import builders
    from smartmine.training.checkpoint import load_checkpoint
    from smartmine.training.config import config_from_dict
    from smartmine.training.trainer import resolve_device

    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    # The run's data may have moved since (eval/embed take --root): don't require the stored data.root to exist.
    cfg = config_from_dict(ckpt["config"], check_paths=False)
    in_channels = 1 if cfg.data.name in builders.SMALL_IMAGE_DATASETS else 3
    model = builders.build_model(cfg, in_channels)
    model.load_state_dict(ckpt["model"])
    dev = resolve_device(device)
    return cfg, model.to(dev).eval(), dev


def _dataset_for(cfg, name: str | None, root: str | None, split: str):
    """The split to embed, with test-time transforms; returns ``(dataset, batch_transform or None)``."""
    from smartmine.data import load_dataset
    from smartmine.training.builders import prepare_split

    name = name or cfg.data.name
    root = root if root is not None else (cfg.data.root if name == cfg.data.name else None)
    options = cfg.data.options if name == cfg.data.name else {}
    dataset = load_dataset(name, root=root, split=split, seed=cfg.seed, on_bad_image=cfg.data.on_bad_image, **options)
    return dataset, prepare_split(cfg, dataset, train=False)


def _embed_split(args: argparse.Namespace, target: str):
    """Load a checkpoint and embed the requested split: ``(checkpoint path, config, dataset, embeddings)``."""
    from smartmine.training.embedding import embed_dataset

    ckpt = _checkpoint_path(target)
    cfg, model, dev = _load_model(ckpt, args.device)
    dataset, batch_tf = _dataset_for(cfg, args.data, args.root, args.split)
    emb = embed_dataset(model, dataset, device=dev, batch_size=args.batch_size, batch_transform=batch_tf,
                        progress=sys.stderr.isatty())
    return ckpt, cfg, dataset, emb


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from smartmine.evaluation import retrieval_metrics

    ckpt, cfg, dataset, emb = _embed_split(args, args.target)
    metrics = retrieval_metrics(
        emb, np.asarray(dataset.labels), ks=tuple(args.ks), seed=cfg.seed, kmeans_backend=cfg.eval.kmeans_backend
    )
    metrics = {k: float(v) for k, v in metrics.items() if _metric(k)}
    print(f"checkpoint {ckpt}, {len(dataset)} images of split '{args.split}'\n")
    print(results_table(metrics, None))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    _, _, dataset, emb = _embed_split(args, args.checkpoint)
    out = Path(args.out)
    np.save(out, emb.numpy())
    labels_path = out.with_name(out.stem + ".labels.npy")
    np.save(labels_path, np.asarray(dataset.labels))
    print(f"wrote {tuple(emb.shape)} embeddings to {out} and labels to {labels_path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from smartmine.report import build_report

    out = build_report([Path(r) for r in args.runs], out=Path(args.out) if args.out else None)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smartmine",
        description="Deep metric learning with dataset-wide smart triplet mining (FANNG graph + adaptive κ) and "
        "distance-weighted sampling.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="train on the embedded glyphs dataset and compare with raw pixels",
                       description="Train a small CNN on half of the glyph classes with smart mining + global loss + "
                       "adaptive κ, evaluate on the unseen half, and print the results next to raw pixels.")
    q.add_argument("--run-dir", default="runs/quickstart",
                   help="run folder (a numbered sibling is used if it exists; default: runs/quickstart)")
    q.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    q.add_argument("--no-report", action="store_true", help="do not build report.html at the end")
    q.set_defaults(func=cmd_quickstart)

    t = sub.add_parser("train", help="train from a YAML config or preset",
                       description="Train from a YAML config (or a shipped preset name: "
                       "quickstart, cub100, smart_mining_cub, ...). Writes config.yaml, metrics.csv, checkpoints/.")
    t.add_argument("config", help="YAML file or preset name")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key in YAML syntax, e.g. --set train.epochs=3 (repeatable)")
    t.add_argument("--run-dir", default=None, help="run folder (overrides run_dir of the config)")
    t.add_argument("--resume", action="store_true", help="continue exactly from the run folder's last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing non-empty run folder")
    t.add_argument("--no-report", action="store_true", help="do not build report.html at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run folder or checkpoint on a test split",
                       description="Embed a split with a trained model and print Recall@K, MAP@R, R-precision, "
                       "P@1 and NMI.")
    e.add_argument("target", help="run folder (uses checkpoints/best.pt, else last.pt) or checkpoint file")
    e.add_argument("--data", default=None, help="dataset name (default: the run's dataset)")
    e.add_argument("--root", default=None, help="dataset root (default: the run's root)")
    e.add_argument("--split", default="test", help="split to evaluate (default: test)")
    e.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="K values of Recall@K")
    e.add_argument("--batch-size", type=int, default=256, help="embedding batch size")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    e.add_argument("--out", default=None, help="also write the metrics as JSON to this file")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("embed", help="write embeddings of a dataset split to a .npy file",
                       description="Embed a split with a trained model; writes FILE.npy (N × D float32) and "
                       "FILE.labels.npy.")
    m.add_argument("checkpoint", help="run folder or checkpoint file")
    m.add_argument("--data", default=None, help="dataset name (default: the run's dataset)")
    m.add_argument("--root", default=None, help="dataset root")
    m.add_argument("--split", default="test", help="split (default: test)")
    m.add_argument("--out", required=True, help="output .npy file")
    m.add_argument("--batch-size", type=int, default=256, help="embedding batch size")
    m.add_argument("--device", default="auto", help="auto | cpu | cuda")
    m.set_defaults(func=cmd_embed)

    r = sub.add_parser("report", help="build report.html for one or several runs",
                       description="Build a self-contained HTML report of a run (several runs: a comparison).")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", default=None, help="output HTML file (default: RUN/report.html)")
    r.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from smartmine.training.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ in ("TrainingError", "CheckpointError"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("interrupted; resume with: smartmine train CONFIG --resume --run-dir RUN", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
