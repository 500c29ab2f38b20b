"""Fork a smart-mining run at its epoch checkpoint with another ``mining.kappa_max_change`` (session 13).

Two runs that differ only in ``kappa_max_change`` are identical until the controller's first update whose step
exceeds the smaller limit; on the reduced cub100 runs the first fitted update (after epoch 2) is the step rule's
factor 2, inside both limits 2 and 4. So instead of a second full run, a copy of the ``kappa_max_change=2`` run's
folder taken after epoch 2 is patched here (the checkpoint's config value and the steered controller's
``max_change``, nothing else) and resumed with ``smartmine train ... --resume``: the resumed epochs are exactly what
the other setting's own run would train, in the same session (runs of one seed from different sessions are not
bit-identical: docs/BENCHMARKS.md, "Session 13").

Usage::

    cp -r RUN_kmc2 RUN_default        # while RUN_kmc2/checkpoints/last.pt is the epoch-2 checkpoint
    python benchmarks/fork_kappa_max_change.py RUN_default --value 4 --epoch 2
    smartmine train configs/cub100.yaml <the same --set options> --run-dir RUN_default --resume
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml


def steered_states(obj, found: list) -> list:
    """Every steered-controller state dict nested in ``obj`` (checkpoint ``extra``)."""
    if isinstance(obj, dict):
        if obj.get("kind") == "steered":
            found.append(obj)
        for v in obj.values():
            steered_states(v, found)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            steered_states(v, found)
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--value", type=float, required=True, help="the new mining.kappa_max_change")
    p.add_argument("--epoch", type=int, required=True, help="the epoch last.pt must hold (a safety check)")
    args = p.parse_args(argv)
    path = args.run_dir / "checkpoints" / "last.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["epoch"] != args.epoch:
        raise SystemExit(f"{path}: holds epoch {ckpt['epoch']}, not {args.epoch}")
    states = steered_states(ckpt["extra"], [])
    if len(states) != 1:
        raise SystemExit(f"{path}: expected one steered controller state, found {len(states)}")
    state = states[0]
    kappa, limit = state["kappa"], args.value
    for r in state["history"]:  # every update so far must lie within the new limit too, or the fork is not exact
        ratio = max(r["next_kappa"] / r["kappa"], r["kappa"] / r["next_kappa"])
        if ratio > min(limit, state["max_change"]) * (1 + 1e-9):
            raise SystemExit(f"{path}: an update moved κ by {ratio:.3g}, beyond one of the limits: not a fork point")
    state["max_change"] = limit
    ckpt["config"]["mining"]["kappa_max_change"] = limit
    torch.save(ckpt, path)
    cfg_path = args.run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["mining"]["kappa_max_change"] = limit
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"{path}: kappa_max_change -> {limit:g} (κ for the next mined epoch {kappa:.4g}, history {state['history']})")


if __name__ == "__main__":
    main()
