"""``smartmine export``: the embedder as an ONNX or TorchScript file, checked against ``TrainedModel.embed``.

The exported graph takes the *preprocessed* batch ``images`` of shape ``(B, C, H, W)`` (what
``TrainedModel.transform`` makes of an image; any batch size) and returns ``embeddings`` ``(B, D)``, unit rows. A JSON
file next to it (``FILE.json``) records that preprocessing, the run and the checkpoint. After writing, the file is
loaded back (ONNX with onnxruntime when it is installed) and run on a random batch; an output that differs from
``embed`` by more than ``atol`` (default 1e-4) is an error and the file is removed.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smartmine.inference.errors import InferenceError
from smartmine.inference.model import TrainedModel

FORMATS = ("onnx", "torchscript")


@dataclass
class ExportResult:
    """``path`` written, ``max_abs_diff`` to ``embed`` on the check batch (``None``: not checked, see ``note``)."""

    path: Path
    format: str
    max_abs_diff: float | None
    note: str = ""


def _trace_quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():  # tracer / deprecation chatter about code paths that do not depend on inputs
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _write(module: torch.nn.Module, example: torch.Tensor, fmt: str, tmp: Path) -> None:
    if fmt == "torchscript":
        _trace_quietly(torch.jit.trace, module, example).save(str(tmp))
        return
    try:
        # The TorchScript-based exporter: no onnxscript needed, and dynamic_axes gives any batch size.
        _trace_quietly(torch.onnx.export, module, (example,), str(tmp), input_names=["images"],
                       output_names=["embeddings"], dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
                       dynamo=False)
    except ImportError as exc:
        raise InferenceError(f"ONNX export needs the onnx package ({exc}): pip install onnx onnxruntime") from exc


def _run_exported(fmt: str, path: Path, x: torch.Tensor) -> np.ndarray | None:
    if fmt == "torchscript":
        loaded = _trace_quietly(torch.jit.load, str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(x).numpy()
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def export_model(model: TrainedModel, out: str | os.PathLike, fmt: str = "onnx", *, atol: float = 1e-4,
                 check_batch: int = 3, seed: int = 0) -> ExportResult:
    """Export ``model`` to ``out`` (``fmt`` ``"onnx"`` or ``"torchscript"``) and check it (see the module docstring).

    The file is written to a temporary name and renamed only after the check passes.
    """
    if fmt not in FORMATS:
        raise InferenceError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.is_dir():
        raise InferenceError(f"{out} is a folder; give a file name, e.g. model.{'onnx' if fmt == 'onnx' else 'pt'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    module = copy.deepcopy(model.module).cpu().eval()
    g = torch.Generator().manual_seed(seed)
    # Inputs look like normalised images; the batch size differs from the traced one to exercise the dynamic axis.
    example = torch.randn(2, *model.input_shape, generator=g)
    x = torch.randn(check_batch, *model.input_shape, generator=g)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        _write(module, example, fmt, tmp)
        got = _run_exported(fmt, tmp, x)
        with torch.no_grad():
            want = module(x).numpy()
        diff = None if got is None else float(np.abs(got - want).max())
        if diff is not None and not diff <= atol:
            raise InferenceError(f"the exported {fmt} model differs from the trained one by {diff:.2e} "
                                 f"(more than {atol:g}); nothing was written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    d = model.config.data
    mean, std = ((0.5,), (0.5,)) if model.input_shape[0] == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    meta = {"format": fmt, "input": "images", "output": "embeddings", "input_shape": ["batch", *model.input_shape],
            "preprocessing": ("greyscale, resize to the input size, [0, 1], (x - mean) / std"
                              if model.input_shape[0] == 1 else
                              f"RGB, resize short side to {round(d.image_size * 8 / 7)}, centre crop {d.image_size}, "
                              "[0, 1], (x - mean) / std"),
            "mean": list(mean), "std": list(std), "embedding_dim": model.embedding_dim, "l2_normalised": True,
            "run_dir": str(model.run_dir), "checkpoint": str(model.checkpoint_path),
            "checkpoint_sha256": model.checkpoint_sha256, "max_abs_diff": diff}
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    note = "" if diff is not None else "onnxruntime is not installed, so the ONNX file was not run back"
    return ExportResult(out, fmt, diff, note)
