"""``smartmine.load(run)``: a trained model that embeds tensors, PIL images, files and folders.

The model applies the run's own test-time preprocessing — photos: resize the short side to ``image_size·8/7``,
centre-crop ``image_size``, ImageNet normalisation; glyphs/digits: greyscale, the training size, ``[-1, 1]`` — so
an image embedded here lands where the same image did during the run's evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm.auto import tqdm

from smartmine.data.images import display_path, load_image
from smartmine.inference.errors import InferenceError
from smartmine.inference.sources import check_readable, list_images

CHECKPOINTS = ("best", "last")
SMALL_SIZES = {"glyphs": 32, "digits": 8}
"""Default image side of the in-memory datasets (glyphs take a ``size`` option)."""


def resolve_checkpoint(run: str | os.PathLike, checkpoint: str = "best") -> tuple[Path, Path]:
    """``(run folder, checkpoint file)`` of ``run`` (a run folder or a ``.pt`` file).

    ``checkpoint`` is ``"best"`` (falls back to ``last.pt`` when the run has no ``best.pt`` yet), ``"last"``, or a
    path. Raises :class:`InferenceError` naming what is missing.
    """
    p = Path(run).expanduser()
    if p.is_file():
        return (p.parent.parent if p.parent.name == "checkpoints" else p.parent), p
    if not p.is_dir():
        raise InferenceError(f"{display_path(p)}: no such run folder")
    if checkpoint not in CHECKPOINTS:
        c = Path(checkpoint)
        if not c.is_file():
            raise InferenceError(f"checkpoint {display_path(c)} does not exist (or use 'best' or 'last')")
        return p, c
    folder = p / "checkpoints"
    order = ("best.pt", "last.pt") if checkpoint == "best" else ("last.pt",)
    for name in order:
        if (folder / name).is_file():
            return p, folder / name
    raise InferenceError(
        f"{display_path(p)}: no checkpoint in {display_path(folder)} (expected {' or '.join(order)}); "
        "the run has not finished an epoch yet, or this is not a run folder"
    )


class _FitSize:
    """Resize a PIL image to ``size × size`` unless it already has that size (the training images do)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.size == (self.size, self.size) else img.resize((self.size, self.size), Image.BILINEAR)

    def __repr__(self) -> str:
        return f"FitSize({self.size})"


def eval_transform(cfg: Any) -> tuple[T.Compose, tuple[int, int, int]]:
    """The run's test-time transform ``PIL image -> (C, H, W) tensor`` and its output shape ``(C, H, W)``."""
    from smartmine.data.transforms import ToGray, photo_transform

    d = cfg.data
    if d.name in SMALL_SIZES:
        # Same values as the run's evaluation: raw [0, 1] pixels, then SmallBatchTransform's (x - 0.5) / 0.5.
        size = int(d.options.get("size", SMALL_SIZES[d.name]))
        tf = T.Compose([ToGray(), _FitSize(size), T.ToTensor(), T.Normalize([0.5], [0.5])])
        return tf, (1, size, size)
    tf = photo_transform(False, resize=int(round(d.image_size * 8 / 7)), crop=d.image_size)
    return tf, (3, d.image_size, d.image_size)


class _Files(Dataset):
    def __init__(self, paths: Sequence[str], transform: T.Compose) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(load_image(self.paths[i], "RGB"))


class TrainedModel:
    """A trained embedder with the run's preprocessing (see :func:`load`).

    Attributes:
        module: the ``torch.nn.Module`` (eval mode) mapping ``(B, C, H, W)`` inputs to ``(B, D)`` unit vectors.
        config: the run's :class:`~smartmine.training.config.RunConfig`.
        transform: ``PIL image -> (C, H, W)`` tensor, the run's test-time transform.
        input_shape: ``(C, H, W)`` the transform produces.
        device: where the module runs.
        run_dir, checkpoint_path: where it came from.
    """

    def __init__(self, module: torch.nn.Module, config: Any, *, run_dir: Path, checkpoint_path: Path,
                 device: torch.device) -> None:
        self.module = module.eval()
        self.config = config
        self.run_dir = Path(run_dir)
        self.checkpoint_path = Path(checkpoint_path)
        self.device = device
        self.transform, self.input_shape = eval_transform(config)

    @property
    def embedding_dim(self) -> int:
        """``D``, the length of an embedding."""
        return int(self.config.model.embedding_dim)

    @cached_property
    def checkpoint_sha256(self) -> str:
        """SHA-256 of the checkpoint file: identifies the weights an index or calibration was made with."""
        h = hashlib.sha256()
        with open(self.checkpoint_path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"TrainedModel(run_dir={str(self.run_dir)!r}, checkpoint={self.checkpoint_path.name!r}, "
                f"backbone={self.config.model.backbone!r}, embedding_dim={self.embedding_dim}, device={self.device})")

    @torch.no_grad()
    def _run(self, batches, total: int, progress: bool | None) -> torch.Tensor:
        show = sys.stderr.isatty() if progress is None else progress
        out = []
        for x in tqdm(batches, total=total, desc="embed", disable=not show, leave=False):
            out.append(self.module(x.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.empty((0, self.embedding_dim))

    def embed(self, x: Any, *, batch_size: int = 256, progress: bool | None = None,
              num_workers: int = 0) -> torch.Tensor:
        """Embeddings ``(N, D)`` (float32, CPU, unit rows) of ``x``, in order.

        ``x`` is one of: a tensor ``(B, C, H, W)`` or ``(C, H, W)`` that is already preprocessed (what
        :attr:`transform` returns; nothing more is applied); a PIL image or a list of them; an image file, a folder
        (every image below it, sorted; see :func:`~smartmine.inference.sources.list_images`), a CSV list, or a list
        of such paths. Batches of ``batch_size`` (default 256); a progress bar on a terminal unless ``progress``
        says otherwise. Unreadable files raise :class:`~smartmine.data.images.BadImageError` naming the file.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if isinstance(x, torch.Tensor):
            t = x.unsqueeze(0) if x.dim() == 3 else x
            if t.dim() != 4 or tuple(t.shape[1:]) != self.input_shape:
                shape = ", ".join(map(str, self.input_shape))
                raise ValueError(f"x: expected a preprocessed batch of shape (B, {shape}), got {tuple(x.shape)} "
                                 "(pass PIL images or paths to have them preprocessed)")
            chunks = t.float().split(batch_size)
            return self._run(chunks, len(chunks), progress)
        if isinstance(x, Image.Image):
            x = [x]
        if isinstance(x, list | tuple) and x and all(isinstance(i, Image.Image) for i in x):
            batches = [torch.stack([self.transform(im) for im in x[s:s + batch_size]])
                       for s in range(0, len(x), batch_size)]
            return self._run(batches, len(batches), progress)
        if isinstance(x, str | os.PathLike) or (isinstance(x, list | tuple) and x):
            paths = list_images(x).paths
            return self.embed_files(paths, batch_size=batch_size, progress=progress, num_workers=num_workers)
        raise ValueError(f"x: expected a tensor, PIL images, or image paths/folders, got {type(x).__name__}"
                         + (" (empty)" if isinstance(x, list | tuple) else ""))

    def embed_files(self, paths: Sequence[str], *, batch_size: int = 256, progress: bool | None = None,
                    num_workers: int = 0) -> torch.Tensor:
        """Embeddings ``(N, D)`` of the image files ``paths`` (each header-checked first, so a bad file fails
        before any work)."""
        check_readable(paths)
        loader = DataLoader(_Files(paths, self.transform), batch_size=batch_size, num_workers=num_workers)
        return self._run(loader, len(loader), progress)

    def load_split(self, split: str = "test", *, data: str | None = None, root: str | None = None):
        """A split of the run's dataset (or of dataset ``data`` at ``root``) with test-time transforms:
        ``(dataset, batch_transform or None)``."""
        from smartmine.data import load_dataset
        from smartmine.training.builders import prepare_split

        cfg = self.config
        name = data or cfg.data.name
        if root is None and name == cfg.data.name:
            root = cfg.data.root
        options = dict(cfg.data.options) if name == cfg.data.name else {}
        dataset = load_dataset(name, root=root, split=split, seed=cfg.seed, on_bad_image=cfg.data.on_bad_image,
                               **options)
        return dataset, prepare_split(cfg, dataset, train=False)

    def embed_split(self, split: str = "test", *, data: str | None = None, root: str | None = None,
                    batch_size: int = 256, progress: bool | None = None):
        """``(embeddings (N, D), dataset)`` of a split of the run's dataset (see :meth:`load_split`)."""
        from smartmine.training.embedding import embed_dataset

        dataset, batch_tf = self.load_split(split, data=data, root=root)
        emb = embed_dataset(self.module, dataset, device=self.device, batch_size=batch_size,
                            batch_transform=batch_tf,
                            progress=sys.stderr.isatty() if progress is None else progress)
        return emb, dataset


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …; CUDA asked for but missing is an
    :class:`InferenceError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InferenceError(f"device: cannot interpret {name!r} ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError(f"device: '{name}' was asked for but CUDA is not available")
    return dev


def load(run: str | os.PathLike, checkpoint: str = "best", *, device: str | None = None) -> TrainedModel:
    """Load a trained model from a run folder (or a checkpoint file).

    Args:
        run: the run folder ``smartmine train`` wrote, or a ``.pt`` checkpoint inside it.
        checkpoint: ``"best"`` (default; ``last.pt`` when there is no ``best.pt``), ``"last"`` or a file path.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``; default: the run's ``train.device`` (the CPU when that asks for
            CUDA and there is none).

    The checkpoint is read with ``torch.load(weights_only=True)``: opening one never runs code. The backbone is
    built without downloading pretrained weights (the checkpoint holds all of them).
    """
    from smartmine.training import builders
    from smartmine.training.checkpoint import load_checkpoint
    from smartmine.training.config import config_from_dict

    run_dir, path = resolve_checkpoint(run, checkpoint)
    ckpt = load_checkpoint(path, map_location="cpu")
    # The data may have moved since training: don't require the stored data.root to exist.
    cfg = config_from_dict(ckpt["config"], check_paths=False)
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False))
    in_channels = eval_transform(cfg)[1][0]
    module = builders.build_model(build_cfg, in_channels)
    module.load_state_dict(ckpt["model"])
    if device is None:
        # The run's own choice, except that a run trained on a GPU still loads on a machine without one.
        device = "cpu" if cfg.train.device.startswith("cuda") and not torch.cuda.is_available() else cfg.train.device
    dev = resolve_device(device)
    return TrainedModel(module.to(dev), cfg, run_dir=run_dir, checkpoint_path=path, device=dev)


def as_numpy(emb: torch.Tensor) -> np.ndarray:
    """``(N, D)`` float32 C-contiguous array of an embedding tensor."""
    return np.ascontiguousarray(emb.detach().cpu().numpy(), dtype=np.float32)
