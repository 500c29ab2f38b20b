"""torch.distributed helpers: a no-op in single-process runs, gloo on CPU and NCCL on CUDA under ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few scalars over all ranks (float64 on CPU; gloo handles it, NCCL needs the device)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def gather_rows(local_rows: torch.Tensor, local_index: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Assemble an ``(total, D)`` matrix from the rows each rank computed for its own ``local_index``.

    Every rank gets the same full matrix (all_gather of equal-size padded shards), so every rank can mine from
    identical embeddings.
    """
    if not info.enabled:
        out = torch.empty((total, local_rows.shape[1]), dtype=local_rows.dtype)
        out[local_index] = local_rows
        return out
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    n_local = torch.tensor([local_rows.shape[0]], device=device)
    sizes = [torch.zeros_like(n_local) for _ in range(info.world_size)]
    dist.all_gather(sizes, n_local)
    max_n = int(max(int(s) for s in sizes))
    pad_rows = torch.zeros((max_n, local_rows.shape[1]), dtype=local_rows.dtype, device=device)
    pad_rows[: local_rows.shape[0]] = local_rows.to(device)
    pad_idx = torch.full((max_n,), -1, dtype=torch.long, device=device)
    pad_idx[: local_index.shape[0]] = local_index.to(device)
    rows = [torch.empty_like(pad_rows) for _ in range(info.world_size)]
    idxs = [torch.empty_like(pad_idx) for _ in range(info.world_size)]
    dist.all_gather(rows, pad_rows)
    dist.all_gather(idxs, pad_idx)
    out = torch.empty((total, local_rows.shape[1]), dtype=local_rows.dtype)
    for r, i in zip(rows, idxs, strict=True):
        keep = i >= 0
        out[i[keep].cpu()] = r[keep].cpu()
    return out


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
