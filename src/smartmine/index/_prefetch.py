"""A software-prefetch hint for numba kernels (LLVM's ``llvm.prefetch``; a no-op where the CPU has none).

Graph search jumps between rows of the vector table in an order the hardware prefetcher cannot guess; asking for the
row of the edge that will most likely be explored next hides part of the memory latency of its distance computation.
That only pays when the rows come from memory: a table that stays in the caches just pays for the prefetching code
(docs/BENCHMARKS.md, session 17), hence :func:`prefetch_min_bytes`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_CACHE_LINE = 64
L2_MULTIPLE = 16  # tables up to this many times the per-core L2 cache are searched without prefetching
FALLBACK_L2_BYTES = 2 * 2**20  # assumed where the OS does not say (so the threshold is 32 MiB)
_SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"


def cache_bytes(level: int, root: str | Path = _SYSFS_CACHES) -> int | None:
    """Size in bytes of CPU 0's data or unified cache of ``level``, from Linux sysfs (``index*/level``, ``type``,
    ``size`` such as ``"2048K"``); ``None`` where it cannot be read (another OS, a container without sysfs)."""
    try:
        for entry in sorted(Path(root).glob("index*")):
            if int((entry / "level").read_text()) != level:
                continue
            if (entry / "type").read_text().strip() == "Instruction":
                continue
            text = (entry / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        return None
    return None


@functools.cache
def prefetch_min_bytes() -> int:
    """Vertex tables larger than this are searched with prefetching (``FanngIndex(search_prefetch=None)``):
    :data:`L2_MULTIPLE` times the per-core L2 cache (32 MiB when unknown). Measured on the 2-core machine of session
    17 (2 MiB of L2 per core): prefetching cost 15-30 % per visit on tables of 1.7-16 MB, broke even at 32 MB and
    gained 40 % at 92 MB; on session 3's (512 KiB of L2) it gained 1.5-1.7x at 32 MB over prefetching one edge."""
    return L2_MULTIPLE * (cache_bytes(2) or FALLBACK_L2_BYTES)


def _prefetch_line(builder, address) -> None:
    """Emit ``llvm.prefetch`` of the cache line at the ``i8*`` ``address``: a read, high locality, data cache."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
    )
    builder.call(fn, [address, i32(0), i32(3), i32(1)])


@intrinsic
def prefetch_row(typingctx, arr, row):
    """Hint that row ``row`` of the 2-D C-contiguous array ``arr`` will be read soon (every cache line of it).
    ``row`` must be a valid row index: no bounds check is made (a prefetch never faults, but the address is computed
    from it)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        row_idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [row_idx, zero], wraparound=False)
        base = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
        ncols = builder.extract_value(ary.shape, 1)
        nbytes = builder.mul(ncols, itemsize)
        # One prefetch per cache line of the row: a short counted loop in IR.
        with cgutils.for_range_slice(
            builder, context.get_constant(types.intp, 0), nbytes, context.get_constant(types.intp, _CACHE_LINE)
        ) as (offset, _):
            _prefetch_line(builder, builder.gep(base, [offset]))
        return context.get_dummy_value()

    return types.void(arr, row), codegen


@intrinsic
def prefetch_item(typingctx, arr, row, col):
    """Hint that element ``arr[row, col]`` of the 2-D C-contiguous array ``arr`` will be read soon (its cache line
    only). No bounds check is made, as in :func:`prefetch_row`."""
    if not (
        isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(row, types.Integer)
        and isinstance(col, types.Integer)
    ):  # fmt: skip
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 2)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        _prefetch_line(builder, builder.bitcast(ptr, ir.IntType(8).as_pointer()))
        return context.get_dummy_value()

    return types.void(arr, row, col), codegen
