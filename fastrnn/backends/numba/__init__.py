"""The Numba backend: the fallback where the compiled extension is missing.

Same contract (``contract.Backend``) and same results (within float
tolerance) as the NumPy reference, with the fast-path structure of the C++
backend. Its parts:

* ``_math``: the kernels' ``jit`` and vectorizable sigmoid / tanh;
* ``_rows``: per kind, the pointwise forward and backward of one batch row
  of one step (the only place the kinds differ);
* ``_loops``: the one forward and one backward time loop every kind runs
  (the recurrent product per step, the rows, the padding rule);
* ``_products``: the transposed weights and the large products outside the
  loops;
* ``_layer``: the contract's entry points (input projection, buffers, the
  loop, weight gradients); ``_checks``: their boundary checks;
* ``_threads``: fastrnn's thread count and OpenBLAS held at one thread
  while a loop runs.

Everything is computed in the dtype it is given (float32 or float64). The
kernels are compiled lazily on their first call (``cache=True`` keeps the
machine code in ``__pycache__`` for the next process), one specialisation per
(kernel, dtype, weight layout): the kind, ``keep`` and ``reverse`` are
run-time arguments, absent arrays are passed with a last axis of length 0.
"""

from __future__ import annotations

from ..._optional import require

# numba, and SciPy: Numba's np.dot calls SciPy's BLAS (both come with fastrnn[numba])
require("numba", extra="numba", feature="the 'numba' backend")
require("scipy.linalg.cython_blas", extra="numba", feature="the 'numba' backend")

from ..contract import KINDS
from ._layer import cell_backward, cell_forward, layer_backward, layer_forward
from ._threads import set_num_threads

NAME = "numba"
PRODUCTS_IN_BLAS = True  # the large GEMMs before and after the time loops

__all__ = ["NAME", "KINDS", "PRODUCTS_IN_BLAS", "layer_forward", "layer_backward", "cell_forward", "cell_backward", "set_num_threads"]
