"""What an epoch of training adds up to: loss, training error and counts, and the one-line log of a finished epoch."""

from __future__ import annotations

import torch


class EpochStats:
    """Sums over an epoch's steps, kept on the device (float64 sums of float32 values, exact counts) so that a step
    never waits for the device; read back once per epoch, or per step only for a visible progress bar."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.err_num = torch.zeros((), dtype=torch.int64, device=device)
        self.err_den = 0
        self.terms: dict[str, torch.Tensor] = {}
        self.batches = self.images = self.skipped = 0

    def add(self, loss: torch.Tensor, active: torch.Tensor, counted: torch.Tensor | None,
            terms: dict[str, torch.Tensor], images: int) -> None:
        """One trained step: its loss, ``(T',)`` active mask, ``(T,)`` counted mask over the first ``T <= T'``
        triplets (``None``: all ``T'``), term values."""
        if counted is not None:
            active = active[: counted.numel()] & counted.to(active.device)
            self.err_den += int(counted.sum())
        else:
            self.err_den += int(active.numel())
        self.err_num += active.sum()
        self.loss_sum += loss.to(torch.float64)
        for name, value in terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + value.to(torch.float64)
        self.batches += 1
        self.images += images

    def totals(self) -> list[float]:
        """``[loss_sum, batches, err_num, err_den, images, skipped]`` as floats (the all-reduce's input)."""
        return [float(self.loss_sum), self.batches, float(self.err_num), self.err_den, self.images, self.skipped]

    def postfix(self, elapsed: float) -> dict[str, str]:
        out = {"loss": f"{float(self.loss_sum) / max(self.batches, 1):.4f}",
               "img/s": f"{self.images / max(elapsed, 1e-9):.0f}"}
        if self.err_den:
            out["err"] = f"{float(self.err_num) / self.err_den:.3f}"
        return out


def summary(row: dict) -> str:
    """The one-line log of a finished epoch; a mined epoch also shows the error against its target, κ with the
    thresholds ``t_a`` (10/50/90 % quantiles), mined against planned triplets and the recall of the neighbour lists
    with the index that built them, e.g.
    ``err 0.52/0.50 | κ 1.4 (t_a 1.07/1.47/2.89) | mined 2040/2040 (50% of triplets) | lists 0.99 (fanng)``."""
    parts = [f"epoch {int(row['epoch'])}", f"loss {row['loss']:.4f}"]
    if row.get("train_error") is not None:
        target = row.get("target_error")
        parts.append(f"err {row['train_error']:.3f}" + (f"/{target:.2f}" if target is not None else ""))
    if row.get("kappa") is not None:
        quantiles = [row.get(k) for k in ("t_q10", "t_q50", "t_q90")]
        t_a = f" (t_a {'/'.join(f'{q:.3g}' for q in quantiles)})" if None not in quantiles else ""
        parts.append(f"κ {row['kappa']:.3g}{t_a}")
    if row.get("mined_planned"):
        share = row.get("mined_fraction")  # the planned mined share; it shrinks when κ is raised past the cap
        of = f" ({share:.0%} of triplets)" if share is not None else ""
        parts.append(f"mined {int(row.get('mined_triplets') or 0)}/{int(row['mined_planned'])}{of}")
    if row.get("list_recall") is not None:
        index = f" ({row['index']})" if isinstance(row.get("index"), str) else ""  # which index mining used
        parts.append(f"lists {row['list_recall']:.2f}{index}")
    if "holdout_map@r" in row:  # data.holdout_classes: the training classes set aside
        parts.append(f"held-out map@r {row['holdout_map@r']:.4f}")
    for key in ("recall@1", "map@r", "nmi"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    return " | ".join(parts)
