"""The backend contract in code: the kinds of recurrence and the :class:`Backend` protocol.

This module is the authoritative statement of the contract (``CONTRACT.md``
points here). Every backend (``reference``, ``numba``, ``cpp``), the layers,
the benchmarks and the tests take the kinds and their gate counts from
:data:`SPECS`; ``tests/test_contract.py`` checks that each backend module
conforms to :class:`Backend` (signatures included) and that the C ABI's kind
enum and the ``_core`` binding accept exactly :data:`KINDS` with these gate
counts.

Kinds and gate layout: G gates, each a row block of H in the weight matrices
``w_ih [G*H, I]``, ``w_hh [G*H, H]`` and the biases ``[G*H]``, in PyTorch's
order. With ``r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})``:

==========  ==  ============  ===========================================================
kind        G   gates         update
==========  ==  ============  ===========================================================
rnn_tanh    1   (h)           h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
rnn_relu    1   (h)           h' = relu(W_ih x + b_ih + W_hh h + b_hh)
lstm        4   i, f, g, o    c' = f*c + i*g ; h' = o*tanh(c')  (i, f, o sigmoid; g tanh)
gru         3   r, z, n       n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h
gru_orig    3   r, z, n       n = tanh(W_in x + b_in + W_hn (r*h) + b_hn); h' = (1-z)*n + z*h
lstm_cifg   4   i, f, g, o    f = 1 - i ; c' = f*c + i*g ; h' = o*tanh(c')  (f's rows unused)
==========  ==  ============  ===========================================================

``gru`` is PyTorch's GRU (ONNX ``linear_before_reset=1``); ``gru_orig`` the
original paper's (ONNX ``linear_before_reset=0``). ``lstm_cifg`` is the LSTM
with coupled input and forget gates (ONNX ``input_forget=1``; Greff et al.'s
CIFG): the forget gate is ``1 - i``, so the f block of the weights and biases
takes no part in the results and its gradient is zero; the parameters keep the LSTM's
shapes, so ONNX's and PyTorch's layouts map onto it unchanged. ``lstm`` and
``lstm_cifg`` (the LSTM kinds) have a cell state ``c``; the others do not.

Peepholes (the LSTM kinds, ``layer_forward``'s ``peep``): per-unit weights
``peep = [p_i, p_f, p_o]`` (one ``[3*H]`` array) let the gates see the cell
state, as ONNX's LSTM input ``P`` (which orders them i, o, f; ``lstm_cifg``
reads no ``p_f``, as ONNX Runtime with ``input_forget=1``)::

    i = sigmoid(... + p_i * c) ; f = sigmoid(... + p_f * c) ; c' = f*c + i*g
    o = sigmoid(... + p_o * c') ; h' = o * tanh(c')

Projection (the LSTM kinds, ``layer_forward``'s ``w_hr``): PyTorch's LSTM with
``proj_size``. The state h has P <= H units, made from the H-unit output by
``w_hr [P, H]``; the cell state c keeps H::

    h' = w_hr @ (o * tanh(c'))      so h0, h_n, out have P units and w_hh is [4*H, P]

Arrays: every array a backend receives is a ``numpy.ndarray`` of ONE floating
dtype (float32 or float64, native byte order), of the shape given below,
C-contiguous and aligned (``layer_forward``'s ``out`` and ``layer_backward``'s
``grad_out`` need only adjacent rows, see there); ``lengths`` is None or an int64 array. A backend
computes in that dtype and returns arrays of it. Every backend checks this at
its boundary and converts nothing: anything else raises TypeError (not an
array, another dtype) or ValueError (shape, layout, values) naming the
argument, the same on every backend. The Python implementations share one
check (``backends/_args.py``); the cpp binding makes the same in C++
(``csrc/python/arrays.h``); ``tests/test_contract.py`` holds them to it.
Read-only arrays are accepted (a backend only reads its inputs).

What a workspace holds, and for how long: a layer's ``ws`` may keep references
to the forward's arrays (x, states, weights, lengths) and read them in
backward, so the caller leaves them unchanged until then; the layers pass
private copies of the caller's x, states and lengths. A cell's ``ws`` holds its
own copies of ``x``, ``h`` and ``c`` (a step's arrays are small, and a copy in
the backend costs less than one per array in Python): the caller may change
them after the call. Weights (and a cell's ``peep`` and ``hmask``) are kept by reference in
both, left unchanged by the caller until backward; the layers refuse
a backward after parameters were replaced (``Module._version``). A backend
never keeps an array it returned (``out``, ``h_n``, ``c_n``, ``h_new``,
``c_new``): the caller owns those and may write into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

__all__ = ["KindSpec", "SPECS", "KINDS", "GATES", "num_gates", "has_cell_state", "Backend", "ThreadedBackend",
           "LAYER_GRAD_KEYS", "CELL_GRAD_KEYS", "PEEPHOLES", "PartialBackwardError"]


@dataclass(frozen=True)
class KindSpec:
    """One kind of recurrence: its name, its gates (row blocks of H, in order) and whether it has a cell state."""

    name: str
    gate_names: tuple[str, ...]
    cell_state: bool
    update: str

    @property
    def gates(self) -> int:
        """G, the number of gates: the weights have G*H rows."""
        return len(self.gate_names)


#: kind name -> its spec, in the order the C ABI's ``enum fastrnn_kind`` numbers them.
SPECS = {spec.name: spec for spec in (
    KindSpec("rnn_tanh", ("h",), False, "h' = tanh(W_ih x + b_ih + W_hh h + b_hh)"),
    KindSpec("rnn_relu", ("h",), False, "h' = relu(W_ih x + b_ih + W_hh h + b_hh)"),
    KindSpec("lstm", ("i", "f", "g", "o"), True, "c' = f*c + i*g ; h' = o*tanh(c')"),
    KindSpec("gru", ("r", "z", "n"), False, "n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h"),
    KindSpec("gru_orig", ("r", "z", "n"), False, "n = tanh(W_in x + b_in + W_hn (r*h) + b_hn); h' = (1-z)*n + z*h"),
    KindSpec("lstm_cifg", ("i", "f", "g", "o"), True, "f = 1 - i ; c' = f*c + i*g ; h' = o*tanh(c')"),
)}
#: The kind names every backend accepts.
KINDS = tuple(SPECS)
#: kind -> G, its number of gates.
GATES = {name: spec.gates for name, spec in SPECS.items()}
#: The LSTM's peephole weights: one [PEEPHOLES*H] array, blocks (p_i, p_f, p_o) of H each.
PEEPHOLES = 3
#: Keys of the dict ``layer_backward`` returns.
LAYER_GRAD_KEYS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "peep", "w_hr")
#: Keys of the dict ``cell_backward`` returns.
CELL_GRAD_KEYS = ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh", "peep")


def _spec(kind: Any) -> KindSpec:
    try:
        return SPECS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}") from None


def num_gates(kind: Any) -> int:
    """G of ``kind``; ValueError naming the kinds if it is not one."""
    return _spec(kind).gates


def has_cell_state(kind: Any) -> bool:
    """Whether ``kind`` carries a cell state ``c`` besides ``h`` (the LSTM kinds: they alone take
    peepholes and a projection); ValueError if it is not a kind."""
    return _spec(kind).cell_state


class PartialBackwardError(RuntimeError):
    """``layer_backward`` failed (no memory, no thread) after it began adding into ``acc``: ``acc``
    may hold part of this backward's weight gradients, and ``ws`` is consumed (a retry would add
    them twice). Any other error of a backward leaves ``ws`` and ``acc`` as they were, so the
    call may be retried."""


Array = np.ndarray


@runtime_checkable
class Backend(Protocol):
    """A backend: a module of ``fastrnn/backends`` with these names. The layers call only these
    and never know which backend runs; ``fastrnn.backends.get_backend`` returns one."""

    #: "numpy", "numba" or "cpp".
    NAME: str
    #: The kinds it accepts: :data:`KINDS`.
    KINDS: tuple[str, ...]
    #: True when its large products run in NumPy's/SciPy's BLAS, whose threads are then its threads;
    #: False when its kernels run them on their own pool and leave BLAS to the caller (training loops
    #: then hold BLAS at one thread: its idle workers would spin on the kernels' cores).
    PRODUCTS_IN_BLAS: bool

    def layer_forward(self, kind: str, x: Array, h0: Array, c0: Optional[Array], w_ih: Array, w_hh: Array,
                      b_ih: Optional[Array], b_hh: Optional[Array], lengths: Optional[Array], reverse: bool,
                      keep: bool, out: Optional[Array] = None, peep: Optional[Array] = None,
                      hmask: Optional[Array] = None, w_hr: Optional[Array] = None) -> tuple[Any, ...]:
        """Whole sequence, one layer, one direction: returns ``(out, h_n, c_n, ws)``.

        - ``x [T, B, I]``, T >= 1, B >= 1, I >= 1
        - ``h0 [B, H]``; ``c0 [B, H]`` for lstm, else None
        - ``w_ih [G*H, I]``, ``w_hh [G*H, H]``
        - ``b_ih [G*H]``, ``b_hh [G*H]``: both arrays, or both None (no bias)
        - ``lengths``: None, or int64 ``[B]`` with 1 <= lengths[b] <= T (padded
          batch: sequence b is valid at steps t < lengths[b])
        - ``reverse``: process t = T-1 .. 0
        - ``keep``: keep what backward needs in ``ws`` (training). With
          keep=False ``ws`` is None and nothing for backward is stored
          (inference).
        - ``out``: None (the backend allocates ``out``), or the array to write
          ``out`` into, which is then returned: shape ``[T, B, H]``, x's dtype,
          writeable and aligned, with *adjacent rows* (each ``out[t, b]`` is H
          adjacent values: unit stride in the last axis; the T and B strides are
          free, whole elements) that do not overlap each other (time-major or
          batch-major, no negative strides), sharing no memory with any other
          argument. So a direction writes its half of a bidirectional
          ``[T, B, 2H]`` output (``buf[:, :, :H]``), or a batch-first one
          (``buf.transpose(1, 0, 2)``), in place. Every element is written. A bad
          ``out`` raises before anything is computed: TypeError if it is not an
          array of x's dtype, ValueError naming ``out`` otherwise.
        - ``peep``: None, or (lstm only) the peephole weights ``[3*H]`` (see the
          module's docstring); kept by reference in ``ws`` like the weights.
        - ``hmask``: None, or ``[B, H]``: the recurrent input's mask (variational
          recurrent dropout: one mask per sequence, the same at every step): each
          step's recurrent product sees ``h * hmask`` instead of ``h`` (``gru_orig``'s
          W_hn sees ``r * (h * hmask)``; the GRU's ``z*h`` and every other use of h see
          h itself). Kept by reference in ``ws``.
        - ``w_hr``: None, or (lstm only) the projection ``[P, H]``, 1 <= P <= H
          (see the module's docstring): then the state's width is P, not H, in
          ``h0``, ``w_hh [G*H, P]``, ``hmask``, ``out`` and ``h_n`` (and in
          backward's ``grad_out``, ``grad_h_n`` and gradients of these); ``c0``,
          ``c_n`` keep H. Kept by reference in ``ws``.
        - returns ``out [T, B, P]``, ``h_n [B, P]`` (P = H without ``w_hr``), ``c_n [B, H]`` (lstm) or
          None, and ``ws``: an opaque object only this backend's
          ``layer_backward`` reads.

        Semantics of ``lengths`` (PyTorch's packed sequences): at a padded step
        (t >= lengths[b]) the state of sequence b is carried unchanged and
        ``out[t, b] = 0``. So ``h_n[b]`` is the state after step lengths[b]-1,
        and in reverse the recursion of sequence b starts from h0 at its own
        last step t = lengths[b]-1.
        """

    def layer_backward(self, ws: Any, grad_out: Array, grad_h_n: Array, grad_c_n: Optional[Array],
                       acc: Optional[tuple[Array, Array]] = None) -> dict[str, Any]:
        """Gradients of a ``layer_forward(..., keep=True)``: a dict with keys :data:`LAYER_GRAD_KEYS`.

        - ``grad_out [T, B, H]``, ``grad_h_n [B, H]``, ``grad_c_n [B, H]``
          (lstm): each an array or None, and None means a zero gradient (the
          result is the same as for a zero array, on every backend);
          ``grad_c_n`` is ignored for other kinds. ``grad_out`` need not be
          dense: any array of the forward's dtype with adjacent rows (as
          ``out`` of :meth:`layer_forward`; here rows may overlap, e.g. a
          broadcast) is read in place, e.g. one direction's half of a
          bidirectional gradient or a batch-first one.
        - returns ``x [T,B,I]``, ``h0 [B,H]``, ``c0 [B,H]`` (lstm; else None),
          ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` (None without bias), ``peep``
          (``[3*H]``; None without peepholes), ``w_hr`` (``[P, H]``; None without a
          projection), freshly allocated. Padded steps
          give zero gradient into x.
        - ``acc``: None, or a pair ``(w_ih [G*H, I], w_hh [G*H, P])`` of
          writeable C-contiguous arrays of the forward's dtype that share no
          memory with the forward's (``peep``, ``hmask``, ``w_hr`` included) or backward's arguments: the weight
          gradients are added into them in place, and the result's ``w_ih``,
          ``w_hh`` are these arrays. The layers pass their running gradients
          (``Module.grads``), which saves a temporary of each weight's size at
          the peak and an add. A bad ``acc`` raises before anything is
          consumed.
        - ``ws`` is consumed by a backward that succeeded (a backend may free
          it); calling backward twice on one ``ws`` is the layer's error to
          prevent. A backward that raises leaves ``ws`` usable and ``acc``
          unchanged (a bad argument, no memory or no thread for the call: it
          may be retried), except :class:`PartialBackwardError`: it failed
          after it began adding into ``acc``, and ``ws`` is consumed.
        """

    def cell_forward(self, kind: str, x: Array, h: Array, c: Optional[Array], w_ih: Array, w_hh: Array,
                     b_ih: Optional[Array], b_hh: Optional[Array], keep: bool,
                     peep: Optional[Array] = None, hmask: Optional[Array] = None) -> tuple[Any, ...]:
        """One step: ``x [B, I]``, ``h [B, H]``, ``c [B, H]`` (lstm) or None; returns
        ``(h_new [B, H], c_new [B, H] (lstm) or None, ws)``, ``ws`` None unless ``keep``; ``ws``
        holds copies of ``x``, ``h``, ``c`` (not references). Weights, biases, ``peep`` and
        ``hmask`` (``[B, H]``: the step's recurrent product sees ``h * hmask``) as in
        :meth:`layer_forward`, kept by reference; the step equals one step of
        :meth:`layer_forward` with the same ``hmask``."""

    def cell_backward(self, ws: Any, grad_h: Array, grad_c: Optional[Array]) -> dict[str, Any]:
        """Gradients of a ``cell_forward(..., keep=True)``: a dict with keys :data:`CELL_GRAD_KEYS`.
        ``grad_h [B, H]``, ``grad_c [B, H]`` (lstm): each an array or None, and None means a zero
        gradient (as for :meth:`layer_backward`); an error names ``grad_h`` or ``grad_c``. As for
        :meth:`layer_backward`, ``ws`` is consumed only by a backward that succeeded."""


@runtime_checkable
class ThreadedBackend(Backend, Protocol):
    """A backend whose kernels take fastrnn's thread count (``fastrnn.set_num_threads`` calls this
    on every loaded backend that has it)."""

    def set_num_threads(self, n: int) -> None:
        """Use ``n`` threads (a positive integer; ValueError otherwise)."""
