"""The ``smartmine`` command line: quickstart, train, eval, embed, report, index, search, calibrate, export.

Exit codes: 0 success, 2 any refusal (bad option, config, data, run folder or input file; one line on stderr naming
the problem), 130 interrupted (the message gives the exact command that resumes the run).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path

from smartmine.reference_columns import reference_columns

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
    from smartmine._registry import did_you_mean
    from smartmine.training.config import ConfigError

    hint = did_you_mean(text, list_presets())
    raise ConfigError(f"'{text}' is neither a config file nor a preset (presets: {', '.join(list_presets())}){hint}")


def results_table(
    model: dict, baseline: dict | None, title: str = "smartmine", untrained: dict | None = None
) -> str:
    """A Markdown table of the final test metrics, next to the raw-pixel baseline and the untrained model when given
    (each with the model's difference from it)."""
    keys = [k for k in METRIC_ORDER if k in model]
    keys += [k for k in model if k not in METRIC_ORDER and is_retrieval_metric(k)]
    references = reference_columns(baseline, untrained)
    header = f"| metric (unseen classes) | {title} |"
    for name, _, difference in references:
        header += f" {name} | {difference} |"
    lines = [header, "|---|---|" + "---|---|" * len(references)]
    for k in keys:
        line = f"| {k} | {model[k]:.3f} |"
        for _, ref, _ in references:
            b = ref.get(k)
            line += f" {b:.3f} | {model[k] - b:+.3f} |" if b is not None else " | |"
        lines.append(line)
    return "\n".join(lines)


def is_retrieval_metric(key: str) -> bool:
    """:func:`smartmine.evaluation.is_retrieval_metric`, imported on use (it pulls in torch; ``--help`` need not)."""
    from smartmine.evaluation.metrics import is_retrieval_metric as is_metric

    return is_metric(key)


def _fresh_run_dir(base: Path) -> Path:
    if not base.exists() or not any(base.iterdir()):
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def _config_error_text(message: str, config_path: Path, overrides: list[str]) -> str:
    """Blame the ``--set`` that caused a config error instead of the file, and name a shipped preset by its name
    rather than by its path inside site-packages."""
    prefix = f"{config_path}: "
    if not message.startswith(prefix):
        return message
    rest = message[len(prefix):]
    if rest.startswith("--set"):
        return rest
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if rest.startswith((f"{key}:", f"unknown key '{key}'")):
            return f"--set {text}: {rest}"
    if config_path.parent == preset_path(config_path.stem).parent:
        return f"preset '{config_path.stem}': {rest}"
    return message


_ACTIVE: dict = {}
"""The run being trained (command line to resume it), for the Ctrl-C message."""


def _leaves_only_setup_files(d: Path) -> bool:
    """``d`` holds nothing but what a start writes before training (``config.yaml``, an empty ``checkpoints/``)."""
    from smartmine import run_folder

    for p in d.iterdir():
        if p.name == run_folder.CHECKPOINTS and p.is_dir() and not any(p.iterdir()):
            continue
        if p.name != run_folder.CONFIG:
            return False
    return True


def _remove_refused_start(run_dir: Path, existed_before: bool) -> None:
    """Undo the folder of a start that failed before training (e.g. pretrained weights missing), so that the
    corrected rerun is not refused with "already exists" (docs/RELIABILITY.md §4)."""
    if not existed_before and run_dir.is_dir() and _leaves_only_setup_files(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


def _train(config_path: Path, overrides: list[str], *, resume: bool, overwrite: bool, run_dir: str | None,
           resume_command: list[str | None] | None = None) -> dict:
    from smartmine.training.config import ConfigError, load_config
    from smartmine.training.trainer import Trainer

    if run_dir is not None:
        overrides = [*overrides, f"run_dir={run_dir}"]
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as exc:
        raise ConfigError(_config_error_text(str(exc), config_path, overrides)) from None
    folder = Path(cfg.run_dir)
    existed = folder.is_dir() and any(folder.iterdir())
    _ACTIVE.update(run_dir=folder, command=[str(folder) if a is None else a for a in resume_command or []])
    try:
        trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    except BaseException:
        if not resume:
            _remove_refused_start(folder, existed and not overwrite)
        raise
    final = trainer.fit()
    return {"run_dir": str(trainer.run_dir), "final": final, "is_main": trainer.dist.is_main}


def cmd_quickstart(args: argparse.Namespace) -> int:
    import time

    run_dir = Path(args.run_dir) if args.resume else _fresh_run_dir(Path(args.run_dir))
    overrides = list(args.set or [])
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    print(f"smartmine quickstart: glyphs (characters rendered from matplotlib's fonts), smart mining + global loss "
          f"+ adaptive κ; run folder {run_dir}")
    t0 = time.perf_counter()
    again = ["smartmine", "quickstart", "--resume", "--run-dir", str(run_dir)]
    again += [a for o in overrides for a in ("--set", o)]
    out = _train(preset_path("quickstart"), overrides, resume=args.resume, overwrite=False, run_dir=str(run_dir),
                 resume_command=again)
    _finish(Path(out["run_dir"]), out["final"], time.perf_counter() - t0, report=not args.no_report)
    return 0


def _finish(run_dir: Path, final: dict, seconds: float | None = None, *, report: bool = True) -> None:
    from smartmine import run_folder

    baseline = run_folder.read_baseline(run_dir)
    metrics = {k: float(v) for k, v in final.items() if is_retrieval_metric(k)}
    table = results_table(metrics, baseline, untrained=run_folder.read_untrained(run_dir))
    run_folder.RunFolder(run_dir).results.write_text(table + "\n", encoding="utf-8")
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
    again = ["smartmine", "train", args.config, "--resume", "--run-dir", None]
    again += [a for o in (args.set or []) for a in ("--set", o)]
    out = _train(resolve_config_path(args.config), list(args.set or []), resume=args.resume,
                 overwrite=args.overwrite, run_dir=args.run_dir, resume_command=again)
    if out["is_main"]:
        _finish(Path(out["run_dir"]), out["final"], report=not args.no_report)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from smartmine.evaluation import retrieval_metrics
    from smartmine.inference.commands import eval_query_gallery
    from smartmine.inference.model import load

    if args.query is not None or args.gallery is not None:
        metrics = eval_query_gallery(args)
        where = f"{metrics['num_queries']} queries ({args.query}) against {metrics['num_gallery']} gallery images " \
                f"({args.gallery})"
    else:
        model = load(args.target, args.checkpoint, device=args.device)
        emb, dataset = model.embed_split(args.split, data=args.data, root=args.root, batch_size=args.batch_size)
        metrics = retrieval_metrics(emb, np.asarray(dataset.labels), ks=tuple(args.ks), seed=model.config.seed,
                                    kmeans_backend=model.config.eval.kmeans_backend)
        where = f"checkpoint {model.checkpoint_path}, {len(dataset)} images of split '{args.split}'"
    metrics = {k: float(v) for k, v in metrics.items() if is_retrieval_metric(k)}
    print(f"{where}\n")
    print(results_table(metrics, None))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from smartmine.inference.commands import embed_to_file

    return embed_to_file(args)


def cmd_report(args: argparse.Namespace) -> int:
    from smartmine.report import build_report

    out = build_report([Path(r) for r in args.runs], out=Path(args.out) if args.out else None)
    print(f"wrote {out}")
    return 0


def _split_options(p: argparse.ArgumentParser) -> None:
    """Which dataset split ``eval`` and ``embed`` read, and how they open the model."""
    from smartmine.inference.commands import add_model_options

    p.add_argument("--data", default=None, help="dataset name (default: the run's dataset)")
    p.add_argument("--root", default=None, help="dataset root (default: the run's root)")
    p.add_argument("--split", default="test", help="split (default: test)")
    add_model_options(p)


def build_parser() -> argparse.ArgumentParser:
    from smartmine import __version__
    from smartmine.inference.commands import add_commands as add_inference_commands

    parser = argparse.ArgumentParser(
        prog="smartmine",
        description="Deep metric learning with dataset-wide smart triplet mining (FANNG graph + adaptive κ) and "
        "distance-weighted sampling.",
    )
    parser.add_argument("--version", action="version", version=f"smartmine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="train on the embedded glyphs dataset and compare with raw pixels",
                       description="Train a small CNN on half of the glyph classes with smart mining + global loss + "
                       "adaptive κ, evaluate on the unseen half, and print the results next to raw pixels.")
    q.add_argument("--run-dir", default="runs/quickstart",
                   help="run folder (a numbered sibling is used if it exists; default: runs/quickstart)")
    q.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    q.add_argument("--no-report", action="store_true", help="do not build report.html at the end")
    q.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its last checkpoint (after an interruption)")
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

    e = sub.add_parser("eval", help="evaluate a run folder or checkpoint on a test split or a query/gallery pair",
                       description="Embed a split with a trained model and print Recall@K, MAP@R, R-precision, "
                       "P@1 and NMI (every image queries all others), or rank --query images against --gallery "
                       "images (split names such as In-Shop's query/gallery, labelled folders, or CSVs; one CSV "
                       "with is_query/is_gallery columns may be given as both).")
    e.add_argument("target", help="run folder (uses checkpoints/best.pt, else last.pt) or checkpoint file")
    e.add_argument("--query", default=None, help="query split name, labelled folder or CSV (with --gallery)")
    e.add_argument("--gallery", default=None, help="gallery split name, labelled folder or CSV (with --query)")
    e.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="K values of Recall@K")
    e.add_argument("--out", default=None, help="also write the metrics as JSON to this file")
    _split_options(e)
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("embed", help="write embeddings of a dataset split or of any images to .npy or .npz",
                       description="Embed a split of the run's dataset (or --images: a folder, flat or "
                       "class-per-folder, a CSV or files) with a trained model. FILE.npy gets FILE.labels.npy, "
                       "FILE.paths.json and FILE.classes.json beside it where known; FILE.npz holds them all as "
                       "arrays (embeddings, labels, paths, class_names).")
    m.add_argument("run", help="run folder or checkpoint file")
    m.add_argument("--images", default=None, help="embed these images instead of a dataset split")
    m.add_argument("--out", required=True, help="output .npy or .npz file")
    _split_options(m)
    m.set_defaults(func=cmd_embed)

    add_inference_commands(sub)

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
        hint = ""
        if type(exc).__name__ == "BadImageError" and args.command in ("train", "quickstart"):
            hint = " (to leave unreadable images out instead, set data.on_bad_image: skip in the config or pass " \
                   "--set data.on_bad_image=skip)"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ in ("TrainingError", "CheckpointError"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print(_interrupted_message(), file=sys.stderr)
        return 130


def _interrupted_message() -> str:
    """What to run after Ctrl-C: the exact resume command, or a restart when no checkpoint was written yet."""
    run_dir, command = _ACTIVE.get("run_dir"), _ACTIVE.get("command")
    if not command:
        return "interrupted"
    line = shlex.join(command)
    from smartmine.run_folder import RunFolder

    if RunFolder(run_dir).last_checkpoint.is_file():
        return f"interrupted; resume with: {line}"
    restart = ["--overwrite" if a == "--resume" else a for a in command] if command[1] == "train" else \
        [a for a in command if a != "--resume"]
    return f"interrupted before the first checkpoint of {run_dir}; start again with: {shlex.join(restart)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
