"""numba compiler options shared by the kernel modules (imported by kernels only: it loads numba)."""

from __future__ import annotations

__all__ = ["NOALIAS"]

try:
    from numba.core.compiler import CompilerBase, DefaultPassBuilder
except ImportError:  # pragma: no cover - numba moved its compiler API: scalar loop (about 2x slower)
    NOALIAS: dict = {}
else:

    class _NoAliasCompiler(CompilerBase):
        """numba's nopython pipeline with ``noalias`` on the array arguments.

        numba adds it to the bodies of ``prange`` loops only; without it LLVM
        cannot vectorise a serial loop that gathers from a table (``rows[k]``,
        any ``k``) and stores into ``out``. Only for kernels whose arguments do
        not overlap (:func:`exact_serial` copies ``x`` when they do); ``out``
        being ``x`` itself is fine: element ``i`` is read before it is written
        and no iteration touches another element of either.
        """

        def define_pipelines(self):
            self.state.flags.noalias = True
            return [DefaultPassBuilder.define_nopython_pipeline(self.state)]

    NOALIAS = {"pipeline_class": _NoAliasCompiler}
