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
FALLBACK_CACHE_BYTES = 64 * 2**20  # last-level cache assumed where the OS does not say (so the threshold is 32 MiB)
_SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"


def last_level_cache_bytes(root: str | Path = _SYSFS_CACHES) -> int | None:
    """Size in bytes of the largest data or unified cache of CPU 0, from Linux sysfs (``index*/size`` such as
    ``"2048K"``); ``None`` where it cannot be read (another OS, a container without sysfs)."""
    sizes = []
    try:
        for entry in Path(root).glob("index*"):
            if (entry / "type").read_text().strip() == "Instruction":
                continue
            text = (entry / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        return None
    return max(sizes) if sizes else None


@functools.cache
def prefetch_min_bytes() -> int:
    """Vertex tables larger than this are searched with prefetching (``FanngIndex(search_prefetch=None)``): half
    the last-level cache, the rest of which the edge lists, the query and other processes' data share; with an
    unknown cache size, 32 MiB. On the 2-core machine of session 17 (480 MiB L3) prefetching cost 15-30 % per visit
    on tables of 1.7-16 MB and broke even at 32 MB; on session 3's (32 MiB L3) it paid 1.5-1.7x at 32 MB."""
    return (last_level_cache_bytes() or FALLBACK_CACHE_BYTES) // 2


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
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(ptr, i8p)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
        ncols = builder.extract_value(ary.shape, 1)
        nbytes = builder.mul(ncols, itemsize)
        # One prefetch per cache line of the row: a short counted loop in IR.
        with cgutils.for_range_slice(
            builder, context.get_constant(types.intp, 0), nbytes, context.get_constant(types.intp, _CACHE_LINE)
        ) as (offset, _):
            builder.call(fn, [builder.gep(base, [offset]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, row), codegen
