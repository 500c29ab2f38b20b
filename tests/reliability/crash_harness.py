"""Crash-safety harness: SIGKILL a tiny training run at many points, resume it, and compare with an uninterrupted run.

Run as a script (``python tests/reliability/crash_harness.py --workdir DIR --out result.json``); the pytest module
``test_crash_safety.py`` runs it once and asserts on its JSON result. It is a separate process so that it can start
with one CPU thread everywhere (``OMP_NUM_THREADS=1`` …, set by the caller), import torch and smartmine once, and then
``fork`` one child per training attempt. Each child runs the real CLI entry point ``smartmine.cli.main(["train",
…])`` exactly as ``python -m smartmine.cli train …`` would, and is killed with SIGKILL either by the trainer's own
fault points (``SMARTMINE_FAULT``), by a kill injected inside the atomic checkpoint/CSV writer (installed in the
child only), or by the parent at a random moment. Forking saves the ~10 s interpreter + torch import per attempt,
which is what makes dozens of kills affordable in a test.

After every kill the parent checks the run folder (:func:`check_run_folder`); after the last resume it compares the
run's final checkpoint and ``metrics.csv`` with the uninterrupted reference bit for bit.

Output JSON: ``{"reference": {...}, "determinism": {...}, "chains": [{"name", "kills": [...], "final": {...}}]}``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

torch.set_num_threads(1)  # identical float reductions in every child (and fork-safe: no OpenMP team exists)

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from smartmine.training.checkpoint import load_checkpoint  # noqa: E402

TIMING = ("seconds", "images_per_second")  # wall-clock columns: the only ones allowed to differ between runs

TINY = {
    "seed": 5,
    "data": {"name": "glyphs", "options": {"variants_per_face": 1, "size": 16}},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "options": {"widths": [8, 16]}},
    "mining": {
        "strategy": "smart",
        "index": "exact",
        "warmup_epochs": 1,
        "triplets_per_epoch": 256,
        "triplets_per_batch": 64,
    },
    "train": {"epochs": 3, "eval_every": 1, "progress": False},
    "eval": {"compute_nmi": False},
}
BATCHES_PER_EPOCH = 256 // 64


# ------------------------------------------------------------------------------------------------ children


def _install_child_faults(spec: str | None, plan_log: Path) -> None:
    """Inside a child: record every triplet plan, and install a write-level kill described by ``spec``.

    ``spec`` forms (``n`` counts calls in this child, 1-based):

    * ``torn:<file>:<n>`` — the n-th checkpoint save to ``<file>`` writes half of its bytes into the temporary file,
      fsyncs it and SIGKILLs (a crash in the middle of ``torch.save``);
    * ``before_replace:<file>:<n>`` — SIGKILL after the temporary file of the n-th write of ``<file>`` is complete
      and fsynced, just before ``os.replace``;
    * ``after_replace:<file>:<n>`` — SIGKILL right after the n-th ``os.replace`` onto ``<file>``.
    """
    from smartmine import _atomic as atomic
    from smartmine.smart.miner import SmartMiner
    from smartmine.training import checkpoint

    original_plan = SmartMiner.plan_epoch

    def recording_plan(self, embeddings, labels, epoch):
        plan, stats = original_plan(self, embeddings, labels, epoch)
        h = hashlib.sha256()
        for part in (plan.a, plan.p, plan.n, plan.is_mined):
            h.update(np.ascontiguousarray(part).tobytes())
        line = json.dumps({"epoch": epoch + 1, "plan": h.hexdigest(), "kappa": stats.get("kappa")}) + "\n"
        fd = os.open(plan_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line.encode())
        os.close(fd)
        return plan, stats

    SmartMiner.plan_epoch = recording_plan
    if not spec:
        return
    kind, target, nth = spec.split(":")
    count = {"n": 0}

    def hit(name: str) -> bool:
        if name != target:
            return False
        count["n"] += 1
        return count["n"] == int(nth)

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "torn":

        def torn_save(obj, path):
            path = Path(path)
            if not hit(path.name):
                return atomic.atomic_torch_save(obj, path)
            buf = io.BytesIO()
            torch.save(obj, buf)
            with atomic.atomic_open(path) as fh:
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                die()
            return None

        checkpoint.atomic_torch_save = torn_save
    elif kind in ("before_replace", "after_replace"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            fire = hit(Path(dst).name)
            if fire and kind == "before_replace":
                die()
            real_replace(src, dst, *args, **kwargs)
            if fire:
                die()

        os.replace = replace
    else:
        raise ValueError(f"unknown fault spec {spec!r}")


def run_child(
    argv: list[str],
    log: Path,
    *,
    env_fault: str | None = None,
    write_fault: str | None = None,
    plan_log: Path,
    kill_after: tuple[Path, int, float] | None = None,
) -> tuple[str, int, float]:
    """Fork a child that runs ``smartmine.cli.main(argv)``; returns ``(how, code, seconds)``.

    ``how`` is ``"exit"`` (``code`` = exit status) or ``"signal"`` (``code`` = signal number). With
    ``kill_after=(csv, rows, delay)`` the parent polls until ``csv`` holds at least ``rows`` epoch rows, waits
    ``delay`` seconds more and SIGKILLs the child if it is still running.
    """
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
            if env_fault:
                os.environ["SMARTMINE_FAULT"] = env_fault
            else:
                os.environ.pop("SMARTMINE_FAULT", None)
            _install_child_faults(write_fault, plan_log)
            from smartmine import cli

            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - report and exit with 1 like the interpreter would
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    if kill_after is not None:
        csv_path, rows, delay = kill_after
        deadline = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if deadline is None and _csv_rows(csv_path) >= rows:
                deadline = time.perf_counter() + delay
            if deadline is not None and time.perf_counter() >= deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    else:
        _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - t0
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status), seconds
    return "exit", os.WEXITSTATUS(status), seconds


def _csv_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------------------------------------ checks


def comparable(row: dict) -> dict:
    """A metrics row without its wall-clock columns."""
    return {k: v for k, v in row.items() if not any(t in k for t in TIMING)}


def csv_without_timing(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if not any(t in c for t in TIMING)]
    return [[cells[i] for i in keep] for cells in (ln.split(",") for ln in lines)]


def best_epoch(history: list[dict], metric: str = "recall@1") -> int | None:
    """The epoch the trainer calls best: the first one reaching the maximum of ``metric``."""
    best, value = None, -math.inf
    for row in history:
        if metric in row and row[metric] > value:
            best, value = int(row["epoch"]), row[metric]
    return best


def _new_best_epochs(history: list[dict], metric: str = "recall@1") -> set[int]:
    """Epochs at which the trainer writes best.pt (a strictly better value than all before)."""
    out, value = set(), -math.inf
    for row in history:
        if metric in row and row[metric] > value:
            out.add(int(row["epoch"]))
            value = row[metric]
    return out


def check_run_folder(run: Path, reference: dict) -> dict:
    """Invariants after a kill; returns a dict of findings with ``ok`` and a list of ``problems``."""
    problems: list[str] = []
    found: dict = {"checkpoint_epoch": 0, "csv_rows": 0, "tmp_files": 0}
    if (run / "config.yaml").exists():
        try:
            yaml.safe_load((run / "config.yaml").read_text())
        except Exception as exc:  # noqa: BLE001
            problems.append(f"config.yaml unreadable: {exc}")
    found["tmp_files"] = sum(1 for p in run.rglob(".*.tmp"))
    last = run / "checkpoints" / "last.pt"
    epoch = 0
    if last.exists():
        try:
            ckpt = load_checkpoint(last)
            epoch = int(ckpt["epoch"])
            history = ckpt["extra"]["history"]
            if [int(r["epoch"]) for r in history] != list(range(1, epoch + 1)):
                problems.append(f"last.pt history epochs {[r['epoch'] for r in history]} for epoch {epoch}")
            ref_hist = reference["history"][:epoch]
            if [comparable(r) for r in history] != [comparable(r) for r in ref_hist]:
                problems.append("last.pt history differs from the reference run's first epochs")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"last.pt does not load: {type(exc).__name__}: {exc}")
    best = run / "checkpoints" / "best.pt"
    if best.exists():
        try:
            best_ckpt_epoch = int(load_checkpoint(best)["epoch"])
            expected = best_epoch(reference["history"][:epoch])
            # best.pt must hold the best epoch so far; it may run one epoch ahead of last.pt (written first), since
            # that epoch is recomputed identically on resume and rewritten.
            if epoch and best_ckpt_epoch not in (expected, epoch + 1):
                problems.append(
                    f"best.pt holds epoch {best_ckpt_epoch} but the best epoch up to the checkpoint "
                    f"(epoch {epoch}) is {expected}; no later epoch will replace it unless it is better"
                )
        except Exception as exc:  # noqa: BLE001
            problems.append(f"best.pt does not load: {type(exc).__name__}: {exc}")
    found["checkpoint_epoch"] = epoch
    csv_path = run / "metrics.csv"
    if csv_path.exists():
        data = csv_path.read_bytes()
        if data and not data.endswith(b"\n"):
            problems.append("metrics.csv has a torn last line (no trailing newline)")
        lines = data.decode("utf-8").splitlines()
        widths = {len(ln.split(",")) for ln in lines}
        if len(widths) > 1:
            problems.append(f"metrics.csv rows of unequal width {sorted(widths)}")
        rows = csv_without_timing(csv_path)[1:] if lines else []
        found["csv_rows"] = len(rows)
        # The CSV is rewritten after the checkpoint, so it may lag the checkpoint by one epoch, never lead it.
        if len(rows) not in (epoch - 1, epoch) and not (epoch == 0 and len(rows) == 0):
            problems.append(f"metrics.csv has {len(rows)} rows but last.pt is at epoch {epoch}")
        ref_rows = reference["csv"][1 : len(rows) + 1]
        ref_header = reference["csv"][0]
        header = csv_without_timing(csv_path)[0] if lines else []
        if rows and (header != ref_header[: len(header)] or rows != [r[: len(header)] for r in ref_rows]):
            problems.append("metrics.csv rows differ from the reference run")
    found["problems"] = problems
    found["ok"] = not problems
    return found


def final_state(run: Path) -> dict:
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    return {
        "history": ckpt["extra"]["history"],
        "model": ckpt["model"],
        "best_model": best["model"],
        "best_epoch": int(best["epoch"]),
        "csv": csv_without_timing(run / "metrics.csv"),
    }


def compare_final(run: Path, ref: dict) -> dict:
    """Bit-for-bit comparison of a finished run with the reference."""
    got = final_state(run)
    hist_equal = [comparable(r) for r in got["history"]] == [comparable(r) for r in ref["history"]]
    model_equal = all(torch.equal(got["model"][k], ref["model"][k]) for k in ref["model"]) and set(got["model"]) == set(
        ref["model"]
    )
    best_equal = all(torch.equal(got["best_model"][k], ref["best_model"][k]) for k in ref["best_model"])
    return {
        "history_equal": hist_equal,
        "model_equal": model_equal,
        "best_model_equal": best_equal,
        "best_epoch": got["best_epoch"],
        "best_epoch_expected": best_epoch(got["history"]),
        "csv_equal": got["csv"] == ref["csv"],
        "final_metrics": {k: v for k, v in comparable(got["history"][-1]).items() if k.startswith(("recall", "map"))},
    }


def plan_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ scenarios


class Session:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def config(self, name: str) -> tuple[Path, Path]:
        raw = json.loads(json.dumps(TINY))
        raw["run_dir"] = str(self.workdir / name)
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path, self.workdir / name

    def clean_run(self, name: str) -> tuple[dict, list[dict], float]:
        cfg, run = self.config(name)
        plans = self.workdir / f"{name}.plans.jsonl"
        how, code, seconds = run_child(["train", str(cfg), "--no-report"], self.workdir / f"{name}.log", plan_log=plans)
        if (how, code) != ("exit", 0):
            raise RuntimeError(f"reference run {name} failed ({how} {code}); see {self.workdir / (name + '.log')}")
        return final_state(run), plan_records(plans), seconds

    def chain(
        self, name: str, faults: list[tuple[str, str | None, float | None]], ref: dict, ref_plans: list[dict]
    ) -> dict:
        """Start a run, kill it at each fault in turn (resuming in between), then let it finish and compare.

        ``faults``: ``(kind, spec, when)`` with kind ``env`` (``SMARTMINE_FAULT=spec``), ``write``
        (:func:`_install_child_faults` spec) or ``random`` (``when=(rows, delay)``: the parent SIGKILLs the child
        ``delay`` seconds after ``metrics.csv`` holds ``rows`` epochs).
        """
        cfg, run = self.config(name)
        log = self.workdir / f"{name}.log"
        plans = self.workdir / f"{name}.plans.jsonl"
        kills: list[dict] = []
        recoveries: list[str] = []

        def attempt(kind: str | None = None, spec: str | None = None, delay: tuple | None = None):
            """Continue the run the way a user would: resume if there is a checkpoint, else start afresh."""
            has_ckpt = (run / "checkpoints" / "last.pt").exists()
            started = run.exists() and any(run.iterdir())
            argv = ["train", str(cfg), "--no-report"]
            if has_ckpt:
                argv.append("--resume")
            elif started:
                # No checkpoint yet: --resume must refuse clearly, and so must a plain restart; then --overwrite.
                how, code, _ = run_child([*argv, "--resume"], log, plan_log=plans)
                text = log.read_text(errors="replace")
                recoveries.append(f"resume refused: exit {code}, 'no checkpoint' in message: {'no checkpoint' in text}")
                if (how, code) != ("exit", 2) or "no checkpoint" not in text.splitlines()[-1]:
                    raise RuntimeError(f"{name}: --resume without a checkpoint gave {how} {code}")
                how, code, _ = run_child(argv, log, plan_log=plans)
                if (how, code) != ("exit", 2) or "--overwrite" not in log.read_text().splitlines()[-1]:
                    raise RuntimeError(f"{name}: restarting over a started run folder gave {how} {code}")
                argv.append("--overwrite")
            return run_child(
                argv,
                log,
                env_fault=spec if kind == "env" else None,
                write_fault=spec if kind == "write" else None,
                plan_log=plans,
                kill_after=(run / "metrics.csv", *delay) if kind == "random" else None,
            )

        epochs = TINY["train"]["epochs"]
        for kind, spec, delay in faults:
            if kind == "random":  # (u, delay): wait for a random share of the epochs still to run, then delay
                done = _csv_rows(run / "metrics.csv")
                delay = (done + min(int(delay[0] * (epochs - done)), max(epochs - done - 1, 0)), delay[1])
            how, code, seconds = attempt(kind, spec, delay)
            entry = {
                "fault": f"{kind}:{spec}"
                if spec
                else f"random: {delay[1]:.2f} s after metrics.csv has {delay[0]} row(s)",
                "seconds": round(seconds, 2),
            }
            if (how, code) == ("signal", signal.SIGKILL):
                entry["killed"] = True
                entry.update(check_run_folder(run, ref))
            else:
                entry["killed"] = False
                entry["outcome"] = f"{how} {code}"
            kills.append(entry)
        how, code, _ = attempt()
        if (how, code) != ("exit", 0):
            raise RuntimeError(f"{name}: final resume failed ({how} {code}); see {log}")
        result = compare_final(run, ref)
        by_epoch = {r["epoch"]: r for r in ref_plans}
        recs = plan_records(plans)
        result["plans_recorded"] = len(recs)
        result["plans_equal"] = all(
            r["plan"] == by_epoch[r["epoch"]]["plan"] and r["kappa"] == by_epoch[r["epoch"]]["kappa"] for r in recs
        )
        return {"name": name, "kills": kills, "recoveries": recoveries, "final": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--random-kills", type=int, default=4, help="parent SIGKILLs at random moments")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the random kill moments")
    args = parser.parse_args()

    from smartmine.data import load_dataset

    # Render the glyphs once in the parent: every forked child finds them in the in-memory cache.
    opts = TINY["data"]["options"]
    for split in ("train", "test"):
        load_dataset("glyphs", split=split, seed=TINY["seed"], **opts)

    s = Session(args.workdir)
    ref, ref_plans, ref_seconds = s.clean_run("reference")
    again, again_plans, _ = s.clean_run("reference_again")
    determinism = {
        "history_equal": [comparable(r) for r in again["history"]] == [comparable(r) for r in ref["history"]],
        "model_equal": all(torch.equal(again["model"][k], ref["model"][k]) for k in ref["model"]),
        "plans_equal": again_plans == ref_plans and len(ref_plans) == TINY["train"]["epochs"],
        "kappa_sequence": [r.get("kappa") for r in ref["history"]],
        "next_kappa_sequence": [r.get("next_kappa") for r in ref["history"]],
    }
    ref_best = best_epoch(ref["history"])
    new_best = _new_best_epochs(ref["history"])
    nb = BATCHES_PER_EPOCH
    # One epoch-end window can be used once per chain: a kill after the checkpoint's rename moves the run on.
    scripted: list[tuple[str, str | None, tuple | None]] = [
        ("env", "batch:1:2", None),  # before any checkpoint exists: --resume is refused, restart with --overwrite
        ("env", "batch:1:0", None),
        ("write", "torn:last.pt:1", None),  # the first checkpoint half written: still no checkpoint
        ("env", "after_checkpoint:1", None),  # checkpoint renamed, metrics.csv not rewritten yet
        ("env", "mining:2", None),
        ("env", "batch:2:1", None),
        ("write", "before_replace:last.pt:1", None),  # complete temporary checkpoint, not yet renamed
    ]
    if 2 in new_best:  # kills around the two checkpoint files of a new best epoch (best.pt is written first)
        scripted.append(("write", "after_replace:best.pt:1", None))
        scripted.append(("write", "after_replace:last.pt:1", None))
    else:
        scripted.append(("write", "before_replace:metrics.csv:2", None))  # 1st CSV write is the resume's rewrite
    scripted += [
        ("env", "mining:3", None),
        ("env", f"batch:3:{nb - 1}", None),
        ("write", "torn:last.pt:1", None),
    ]
    if 3 in new_best:
        scripted.append(("write", "after_replace:best.pt:1", None))
    scripted.append(("write", "before_replace:metrics.csv:2", None))  # finished run whose CSV lags one epoch
    chains = [s.chain("scripted", scripted, ref, ref_plans)]
    rng = random.Random(args.seed)
    # Random moments spread over the run: wait for a random share of the remaining epochs to finish, then a random
    # delay of up to half an epoch's time (the kill may land in training, mining, evaluation or a checkpoint write).
    epoch_seconds = ref_seconds / TINY["train"]["epochs"]
    randoms = [
        ("random", None, (rng.random(), rng.uniform(0.0, 0.5 * epoch_seconds))) for _ in range(args.random_kills)
    ]
    if randoms:
        chains.append(s.chain("random", randoms, ref, ref_plans))
    out = {
        "reference": {
            "seconds": round(ref_seconds, 2),
            "best_epoch": ref_best,
            "final_metrics": {
                k: v for k, v in comparable(ref["history"][-1]).items() if k.startswith(("recall", "map"))
            },
        },
        "determinism": determinism,
        "chains": chains,
    }
    args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
