"""Checkpoints for exact resume: model, optimisers, schedulers, RNG states and run extras, written atomically.

A checkpoint is a dict saved with :func:`torch.save` (via :func:`~smartmine._atomic.atomic_torch_save`):

==================== =========================================================================================
key                  content
==================== =========================================================================================
``format``           ``"smartmine-checkpoint"``
``format_version``   :data:`FORMAT_VERSION` (an older or newer version is refused with a clear error)
``epoch``            the number of completed epochs
``model``            ``model.state_dict()`` (a DistributedDataParallel wrapper is unwrapped)
``optimizers``       ``{name: optimizer.state_dict()}`` (anything with ``state_dict``, e.g. a ``GradScaler``)
``schedulers``       ``{name: scheduler.state_dict()}``
``rng``              :func:`capture_rng_state` at save time
``extra``            run state of the caller (κ controller, best metric, counters …)
``config``           the run's configuration as a nested dict
``config_fingerprint`` SHA-256 of the flattened config (:func:`config_fingerprint`)
``versions``         torch and smartmine versions that wrote the file
==================== =========================================================================================

Everything stored must be loadable by ``torch.load(weights_only=True)`` (tensors, numbers, strings, bytes, ``None``,
and lists/tuples/dicts of them): :func:`save_checkpoint` checks this before writing and names the offending entry,
so that loading never needs to unpickle arbitrary code. NumPy scalars are converted to Python numbers on the way.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import json
import os
import pickle
import random
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartmine._atomic import (  # re-exported for callers of the checkpoint API
    atomic_append_line,
    atomic_open,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    csv_row_line,
    read_csv_rows,
)

__all__ = [
    "CheckpointError",
    "ConfigMismatchError",
    "DEFAULT_RESUME_IGNORE",
    "FORMAT_VERSION",
    "atomic_append_line",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "capture_rng_state",
    "check_compatible",
    "config_fingerprint",
    "csv_row_line",
    "flatten_config",
    "load_checkpoint",
    "read_csv_rows",
    "restore_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "smartmine-checkpoint"
FORMAT_VERSION = 1
DEFAULT_RESUME_IGNORE: tuple[str, ...] = (
    "run_dir",
    "train.epochs",
    "train.progress",
    "train.device",
    "train.eval_every",
    "data.root",
    "data.num_workers",
    "data.eval_batch_size",
)
"""Config keys that may legitimately differ on ``--resume`` (more epochs, another output or data location, …)."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: missing, corrupt, truncated or of an unknown format; the message names it."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint was written by a run with a different configuration; ``differences`` maps key → (saved, now)."""

    def __init__(self, message: str, differences: dict[str, tuple[Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


# ------------------------------------------------------------------------------------------------ RNG state


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states: Python ``random``, NumPy's legacy global generator, torch CPU and the current CUDA device.

    The result holds only plain types and tensors (storable in a ``weights_only`` checkpoint). ``cuda`` holds the
    current device's state, or ``None`` when CUDA is unavailable or not initialised in this process. Generators
    owned by the caller (``np.random.Generator``, ``torch.Generator``) are not global; store
    ``gen.bit_generator.state`` / ``gen.get_state()`` in ``extra`` yourself.
    """
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global generator is what we must capture
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.uint32).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": _capture_cuda_rng(),
    }


def _capture_cuda_rng() -> dict[str, Any] | None:
    """The current CUDA device's generator state, or ``None`` when CUDA is unused.

    Only the current device: under DistributedDataParallel each rank owns one device, and touching the others
    (``get_rng_state_all``) would create a CUDA context on every GPU from every rank. A process that never
    initialised CUDA has no CUDA randomness to capture, and capturing would initialise it.
    """
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    device = torch.cuda.current_device()
    return {"device": int(device), "state": torch.cuda.get_rng_state(device)}


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned, so the next random numbers repeat exactly.

    A CUDA state is restored into the current CUDA device; without CUDA a warning says it was skipped (CPU-side
    streams are still exact).
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise ValueError(f"state: missing RNG entries {missing}; expected the dict of capture_rng_state()")
    py = state["python"]
    # A round trip through torch.save may turn the inner tuple into a list; random.setstate needs tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    key = npst["key"].numpy() if isinstance(npst["key"], torch.Tensor) else np.asarray(npst["key"])
    np.random.set_state(  # noqa: NPY002 - restoring the global generator
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": key.astype(np.uint32), "pos": int(npst["pos"])},
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    cuda = state.get("cuda")
    if cuda is not None:
        if torch.cuda.is_available():
            # Into the current device: a resumed rank may run on another index than the one that saved.
            torch.cuda.set_rng_state(cuda["state"].cpu(), device=torch.cuda.current_device())
        else:
            warnings.warn(
                "restore_rng_state: the checkpoint has a CUDA RNG state but CUDA is not available here; "
                "CPU random streams are restored, CUDA ones are not",
                RuntimeWarning,
                stacklevel=2,
            )


# ------------------------------------------------------------------------------------------------ config


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → ``{"section.key": value}`` (lists and other leaves kept as they are)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a (nested) dict, got {type(config).__name__}")
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _ignored(key: str, ignore: Iterable[str]) -> bool:
    """``key`` matches a pattern exactly, as a dotted prefix (``"data"`` covers ``"data.root"``), or by fnmatch."""
    return any(key == pat or key.startswith(pat + ".") or fnmatch.fnmatchcase(key, pat) for pat in ignore)


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def config_fingerprint(config: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """SHA-256 hex digest of the flattened config without the ``ignore``-d keys (key order does not matter)."""
    ignore = tuple(ignore)
    flat = {k: _canonical(v) for k, v in flatten_config(config).items() if not _ignored(k, ignore)}
    text = json.dumps(flat, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_compatible(
    checkpoint: Mapping[str, Any],
    config: Mapping[str, Any],
    ignore: Iterable[str] = DEFAULT_RESUME_IGNORE,
    absent_means: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ConfigMismatchError` naming every key whose value differs between the checkpoint's config and
    ``config`` (keys present on one side only count as differing), except keys matched by ``ignore``.

    ``ignore`` entries are dotted keys, dotted prefixes or ``fnmatch`` patterns (``"train.*"``). ``absent_means``
    (dotted key → value): what a key missing from the checkpoint's config stood for (a key added to smartmine after
    the run started; e.g. :func:`smartmine.training.config.absent_key_values`); such a key differs only if ``config``
    sets another value.
    """
    if "config" not in checkpoint or not isinstance(checkpoint["config"], Mapping):
        raise CheckpointError("checkpoint: has no 'config' entry; was it written by save_checkpoint?")
    ignore = tuple(ignore)
    saved = {k: _canonical(v) for k, v in flatten_config(checkpoint["config"]).items()}
    now = {k: _canonical(v) for k, v in flatten_config(config).items()}
    missing = object()
    differences: dict[str, tuple[Any, Any]] = {}
    stood_for = {k: _canonical(v) for k, v in (absent_means or {}).items()}
    for key in sorted(set(saved) | set(now)):
        if _ignored(key, ignore):
            continue
        a, b = saved.get(key, stood_for.get(key, missing)), now.get(key, missing)
        if a != b:
            differences[key] = (None if a is missing else a, None if b is missing else b)
    if differences:
        lines = []
        for key, (a, b) in differences.items():
            a_txt = _short(a) if key in saved else "(absent)" if a is None else f"(absent: older runs used {_short(a)})"
            b_txt = "(absent)" if key not in now else _short(b)
            lines.append(f"  {key}: checkpoint {a_txt}, now {b_txt}")
        source = checkpoint.get("path", "the checkpoint")
        raise ConfigMismatchError(
            f"{source} was written with a different config in {len(differences)} key(s) "
            f"({', '.join(differences)}):\n" + "\n".join(lines) + "\nResume with the original config, or start a new "
            "run (keys that may change on resume: " + ", ".join(ignore) + ")",
            differences,
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------ save / load


_SAFE_LEAVES = (torch.Tensor, str, bytes, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def _sanitize(value: Any, where: str) -> Any:
    """Return ``value`` with NumPy scalars as Python numbers; raise ``ValueError`` naming any unsafe entry."""
    if isinstance(value, np.generic):
        return value.item()
    if type(value) in _SAFE_LEAVES or isinstance(value, torch.Tensor):
        return value
    # Subclasses of plain types (torch's TorchVersion is a str, an IntEnum is an int) are not safe to unpickle.
    for plain in (bool, int, float, str, bytes):
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, Mapping):
        items = {k: _sanitize(v, f"{where}[{k!r}]") for k, v in value.items()}
        # Keep the dict types torch's safe loader knows (MultiStepLR's milestones are a Counter).
        return type(value)(items) if type(value) in (collections.Counter, collections.OrderedDict) else items
    if isinstance(value, tuple):
        return tuple(_sanitize(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [_sanitize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    hint = " (convert with torch.from_numpy or .tolist())" if isinstance(value, np.ndarray) else ""
    raise ValueError(
        f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a checkpoint{hint}; "
        "use tensors, numbers, strings, None and lists/tuples/dicts of them"
    )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        smartmine_version = version("smartmine")
    except Exception:  # noqa: BLE001 - metadata absent in odd installs
        smartmine_version = "unknown"
    return {"torch": torch.__version__, "smartmine": smartmine_version}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    epoch: int,
    rng_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` (see the module docstring for its content) and return the path.

    ``rng_state`` defaults to :func:`capture_rng_state` at call time; pass one captured earlier (e.g. at the end of
    the epoch, before evaluation consumed random numbers) to resume from that point exactly.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch: expected a non-negative integer, got {epoch!r}")
    config = dict(config or {})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "model": _unwrap(model).state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in (optimizers or {}).items()},
        "schedulers": {name: sch.state_dict() for name, sch in (schedulers or {}).items()},
        "rng": dict(rng_state) if rng_state is not None else capture_rng_state(),
        "extra": dict(extra or {}),
        "config": config,
        "config_fingerprint": config_fingerprint(config),
        "versions": _versions(),
    }
    payload = _sanitize(payload, "checkpoint")
    path = Path(path)
    atomic_torch_save(payload, path)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; returns its dict with ``"path"`` added.

    Raises ``FileNotFoundError`` when ``path`` does not exist and :class:`CheckpointError` (naming the file) when it
    is truncated, corrupt, not a smartmine checkpoint, or of another format version. Only ``weights_only`` loading
    is used: a checkpoint cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it was never completely written")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch reports every failure of its safe unpickler this way; only "Unsupported global" means a readable
        # file with objects we refuse to unpickle, anything else is damage.
        marker = "WeightsUnpickler error:"
        detail = next((ln.split(marker, 1)[1].strip() for ln in str(exc).splitlines() if marker in ln), "")
        if "Unsupported global" in detail:
            raise CheckpointError(
                f"checkpoint {path} holds objects that cannot be loaded safely (it was not written by "
                f"save_checkpoint): {detail}"
            ) from exc
        reason = f"unpickling failed: {detail}" if detail else "unpickling failed"
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read ({reason}); "
            "use an earlier checkpoint or start again"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); use an earlier checkpoint or start again"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a smartmine checkpoint (no '{FORMAT}' format marker)")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this smartmine reads version {FORMAT_VERSION}"
        )
    for key in ("epoch", "model", "optimizers", "schedulers", "rng", "extra", "config"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks its '{key}' entry")
    ckpt["path"] = str(path)
    return ckpt


def restore_checkpoint(
    checkpoint: Mapping[str, Any],
    *,
    model: torch.nn.Module | None = None,
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
    strict: bool = True,
) -> None:
    """Load the states of a :func:`load_checkpoint` dict into live objects (each optional).

    Every named optimizer/scheduler must be in the checkpoint (and, with ``strict``, the checkpoint must have no
    others); mismatching model keys raise :class:`CheckpointError` naming the file and the keys.
    """
    source = checkpoint.get("path", "checkpoint")
    if model is not None:
        try:
            _unwrap(model).load_state_dict(checkpoint["model"], strict=strict)
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: model state does not fit this model: {exc}") from exc
    for kind, live in (("optimizers", optimizers), ("schedulers", schedulers)):
        if live is None:
            continue
        saved = checkpoint[kind]
        absent = sorted(set(live) - set(saved))
        extra = sorted(set(saved) - set(live))
        if absent or (strict and extra):
            raise CheckpointError(
                f"{source}: {kind} differ: missing in checkpoint {absent}, only in checkpoint {extra}"
            )
        for name, obj in live.items():
            try:
                obj.load_state_dict(saved[name])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(f"{source}: cannot restore {kind[:-1]} '{name}': {exc}") from exc
    if restore_rng:
        restore_rng_state(checkpoint["rng"])
