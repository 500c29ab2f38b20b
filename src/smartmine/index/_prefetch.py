"""A software-prefetch hint for numba kernels (LLVM's ``llvm.prefetch``; a no-op where the CPU has none).

Graph search jumps between rows of the vector table in an order the hardware prefetcher cannot guess; asking for the
row of the edge that will most likely be explored next hides part of the memory latency of its distance computation.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_CACHE_LINE = 64


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
