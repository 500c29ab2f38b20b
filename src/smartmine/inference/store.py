"""Folders written atomically and arrays read without pickle: the safe on-disk layer of saved indexes.

A folder is written next to its destination under a hidden temporary name, every file fsynced, then renamed into
place; an existing destination (``overwrite``) is first renamed aside and removed only after the new one is in
place. A crash therefore leaves the old folder, the new one, or (between the two renames) the old one under its
hidden name — never a half-written folder under the real name.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from smartmine.data.images import display_path
from smartmine.inference.errors import InferenceError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def write_array(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def write_folder(dest: str | os.PathLike, fill: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Create folder ``dest`` atomically: ``fill(tmp)`` writes the files into a temporary sibling first."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise InferenceError(f"{display_path(dest)} already exists; pass --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_dir(tmp)
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InferenceError(f"{display_path(path)} is missing") from None
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{display_path(path)}: not valid JSON ({exc})") from exc


def read_array(path: Path) -> np.ndarray:
    """``np.load`` with ``allow_pickle=False``: a file holding pickled objects is refused, never unpickled."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InferenceError(f"{display_path(path)} is missing") from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InferenceError(
                f"{display_path(path)} holds pickled Python objects; refusing to load it (saved indexes hold plain "
                "arrays only, and unpickling a file can run arbitrary code)"
            ) from exc
        raise InferenceError(f"{display_path(path)}: not a NumPy array file ({exc})") from exc
    except OSError as exc:
        raise InferenceError(f"{display_path(path)}: cannot read it ({exc})") from exc
