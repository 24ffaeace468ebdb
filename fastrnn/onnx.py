"""ONNX in and out: ONNX ``LSTM``/``GRU``/``RNN`` nodes as fastrnn layers, fastrnn layers as ONNX models.

:func:`load` reads a model (a path, bytes or an ``onnx.ModelProto``) and returns an
:class:`OnnxModel`: one :class:`RecurrentNode` per LSTM/GRU/RNN node, each holding the
fastrnn layer with that node's weights, and :meth:`OnnxModel.run`, which runs the graph on
NumPy when it consists of recurrent nodes and shape glue only (``Transpose``, ``Reshape``,
``Squeeze``, ``Unsqueeze``, ``Concat``, ``Slice``, ``Identity``, ``Constant``).
:attr:`OnnxModel.layer` is the one fastrnn layer of a single-node model or of a model
written by :func:`export`.

:func:`export` writes a fastrnn ``RNN``/``LSTM``/``GRU`` layer as an ONNX model: one
recurrent node per layer of the stack, joined by the ``Transpose`` + ``Reshape`` that turn
ONNX's ``Y [T, num_directions, B, H]`` into the next node's ``X [T, B, num_directions*H]``.

Weight layouts: ONNX keeps ``W [num_directions, G*H, I]``, ``R [num_directions, G*H, H]``
and ``B [num_directions, 2*G*H]`` (= ``[Wb, Rb]``) with gates in the order LSTM (i, o, f, c),
GRU (z, r, h); fastrnn (as PyTorch) keeps one ``weight_ih [G*H, I]`` per layer and direction
with gates LSTM (i, f, g, o), GRU (r, z, n). The conversion reorders the row blocks.

Supported: every kind (RNN tanh/relu, LSTM, GRU with ``linear_before_reset`` 1 = PyTorch's
form or 0 = the original paper's), directions ``forward``, ``reverse`` and ``bidirectional``,
``layout`` 0 (time-major) and 1 (batch-first), ``sequence_lens``, ``initial_h``/``initial_c``,
LSTM peepholes (input ``P [num_directions, 3*H]``, blocks i, o, f; fastrnn's
``weight_peep`` holds i, f, o) and the LSTM's ``input_forget=1`` (coupled input and forget
gates, f = 1 - i: ``LSTM(input_forget=True)``, kind ``lstm_cifg``). Unsupported, each raising
an :class:`UnsupportedOnnxError` that names it: activations other than the defaults (RNN:
``Tanh`` or ``Relu``), ``activation_alpha``/``activation_beta`` and ``clip``.

onnx is imported only when these functions run (``pip install "fastrnn[onnx]"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np

from ._grad_mode import no_grad
from ._optional import require
from ._validate import as_dtype, lengths_array
from .backends.contract import GATES, has_cell_state
from .rnn import GRU, LSTM, RNN

if TYPE_CHECKING:
    import onnx

Layer = Union[RNN, LSTM, GRU]

__all__ = ["load", "export", "OnnxModel", "RecurrentNode", "UnsupportedOnnxError", "DEFAULT_OPSET"]

#: The opset :func:`export` writes (RNN/LSTM/GRU 14, which added ``layout``; ONNX Runtime >= 1.11 runs it).
DEFAULT_OPSET = 17

_OPS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
#: fastrnn (PyTorch) gate block k is ONNX gate block _FROM_ONNX[op][k].
_FROM_ONNX = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
#: ONNX gate block j is fastrnn gate block _TO_ONNX[op][j].
_TO_ONNX = {op: tuple(int(i) for i in np.argsort(p)) for op, p in _FROM_ONNX.items()}
#: The LSTM's peephole blocks: fastrnn's (i, f, o) are ONNX's P blocks (0, 2, 1) (its own inverse).
_PEEP_ORDER = (0, 2, 1)
_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}
_DIRECTIONS = ("forward", "reverse", "bidirectional")
#: the attributes of ONNX's LSTM/GRU/RNN and their types (ONNX's operator schemas)
_ATTRIBUTE_TYPES = {"hidden_size": "int", "direction": "string", "layout": "int", "activations": "strings",
                    "activation_alpha": "floats", "activation_beta": "floats", "clip": "float",
                    "linear_before_reset": "int", "input_forget": "int"}


def _has_type(value: Any, want: str) -> bool:
    """Whether an attribute's value (as ``_attr`` gives it) is of the ONNX type ``want``."""
    if want in ("strings", "floats"):
        return isinstance(value, list) and all(_has_type(v, want[:-1]) for v in value)
    if want == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if want == "float":
        return isinstance(value, float)
    return isinstance(value, str)


_GLUE_OPS = ("Identity", "Constant", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice")
_METADATA_KEY = "fastrnn.layer"


class UnsupportedOnnxError(ValueError):
    """An ONNX node uses a feature fastrnn does not implement (the message names it)."""


def _onnx() -> ModuleType:
    """The onnx package, or the one-line MissingExtraError naming the extra that installs it."""
    return require("onnx", extra="onnx", feature="fastrnn.onnx")


# ----------------------------------------------------------------------------
# weight layouts
# ----------------------------------------------------------------------------


def _reorder(a: np.ndarray, order: Sequence[int], H: int) -> np.ndarray:
    """Row blocks of H of ``a`` (axis 0) taken in ``order``."""
    return np.concatenate([a[k * H:(k + 1) * H] for k in order], axis=0)


def _kind_of(op: str, attrs: Mapping[str, Any]) -> str:
    """fastrnn kind of an ONNX node (its activations and GRU form)."""
    if op == "GRU":
        lbr = int(attrs.get("linear_before_reset", 0))
        if lbr not in (0, 1):
            raise ValueError(f"linear_before_reset must be 0 or 1, got {lbr}")
        return "gru" if lbr else "gru_orig"
    if op == "LSTM":
        cifg = int(attrs.get("input_forget", 0))
        if cifg not in (0, 1):
            raise ValueError(f"input_forget must be 0 or 1, got {cifg}")
        return "lstm_cifg" if cifg else "lstm"
    return "rnn_tanh"  # the activation may make it rnn_relu (see _check_activations)


# ----------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------


class RecurrentNode:
    """One ONNX ``LSTM``/``GRU``/``RNN`` node as a fastrnn layer.

    Attributes: ``name``, ``op_type``, ``inputs``/``outputs`` (the node's value names, ``""``
    for an omitted one), ``direction`` (``"forward"``, ``"reverse"`` or ``"bidirectional"``),
    ``layout`` (0: ``X [T, B, I]``; 1: ``X [B, T, I]``), ``hidden_size`` and ``layer``: a
    one-layer fastrnn ``RNN``/``LSTM``/``GRU`` with the node's weights (bidirectional when
    the node is, ``batch_first`` when ``layout`` is 1). A ``"reverse"`` node has no fastrnn
    layer of its own: ``layer`` holds its weights as a forward layer, and calling the node
    runs that layer over each sequence reversed within its length (which is what a reverse
    direction computes).

    Calling the node, ``node(X, sequence_lens=None, initial_h=None, initial_c=None)``,
    computes what the ONNX operator does, in ONNX's layouts: ``(Y, Y_h)`` (LSTM:
    ``(Y, Y_h, Y_c)``) with ``Y [T, D, B, H]`` (layout 1: ``[B, T, D, H]``) and ``Y_h [D, B, H]``
    (layout 1: ``[B, D, H]``).
    """

    def __init__(self, node: onnx.NodeProto, attrs: Mapping[str, Any], consts: Mapping[str, np.ndarray],
                 dtype: Any, backend: str | None) -> None:
        self.name = node.name
        self.op_type = node.op_type
        self.inputs = list(node.input) + [""] * (8 - len(node.input))
        self.outputs = list(node.output)
        op = self.op_type
        where = f"{op} node {self.name!r}" if self.name else f"{op} node"
        self._where = where
        unknown = sorted(set(attrs) - set(_ATTRIBUTE_TYPES))
        if unknown:
            raise UnsupportedOnnxError(f"{where}: unknown attribute(s) {unknown}")
        for name, value in attrs.items():
            if not _has_type(value, _ATTRIBUTE_TYPES[name]):
                raise ValueError(f"{where}: attribute {name!r} must be of ONNX type {_ATTRIBUTE_TYPES[name]}, "
                                 f"got {value!r}")
        if attrs.get("hidden_size", 1) < 1:
            raise ValueError(f"{where}: attribute 'hidden_size' must be a positive integer, got {attrs['hidden_size']}")
        for name in ("clip", "activation_alpha", "activation_beta"):
            if name in attrs:
                raise UnsupportedOnnxError(f"{where}: attribute {name!r} is not supported by fastrnn")
        if op != "LSTM" and "input_forget" in attrs:
            raise UnsupportedOnnxError(f"{where}: unknown attribute(s) ['input_forget']")
        if op != "GRU" and "linear_before_reset" in attrs:
            raise UnsupportedOnnxError(f"{where}: unknown attribute(s) ['linear_before_reset']")
        direction = attrs.get("direction", "forward")
        if direction not in _DIRECTIONS:
            raise ValueError(f"{where}: direction must be one of {list(_DIRECTIONS)}, got {direction!r}")
        self.direction = direction
        self.layout = int(attrs.get("layout", 0))
        if self.layout not in (0, 1):
            raise ValueError(f"{where}: layout must be 0 or 1, got {self.layout}")
        D = 2 if direction == "bidirectional" else 1
        kind = _kind_of(op, attrs)
        kind = self._check_activations(attrs.get("activations"), kind, D)

        def const(i: int, what: str) -> np.ndarray | None:
            name = self.inputs[i]
            if not name:
                return None
            if name not in consts:
                raise UnsupportedOnnxError(f"{where}: input {what} ({name!r}) is computed in the graph or fed at run "
                                           "time; fastrnn needs the weights as initializers or Constant nodes, "
                                           f"or given to load(..., constants={{{name!r}: array}})")
            return consts[name]

        W, R, B = const(1, "W"), const(2, "R"), const(3, "B")
        if W is None or R is None:
            raise ValueError(f"{where}: inputs W and R are required")
        P = const(7, "P (peepholes)") if op == "LSTM" else None
        G = GATES[kind]
        if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G:
            raise ValueError(f"{where}: W must have shape ({D}, {G}*hidden_size, input_size), got {W.shape}")
        H = int(attrs.get("hidden_size", W.shape[1] // G))
        I = W.shape[2]
        if W.shape[1] != G * H:
            raise ValueError(f"{where}: W must have shape ({D}, {G * H}, input_size) for hidden_size={H}, "
                             f"got {W.shape}")
        if R.shape != (D, G * H, H):
            raise ValueError(f"{where}: R must have shape {(D, G * H, H)}, got {R.shape}")
        if B is not None and B.shape != (D, 2 * G * H):
            raise ValueError(f"{where}: B must have shape {(D, 2 * G * H)}, got {B.shape}")
        if P is not None and P.shape != (D, 3 * H):
            raise ValueError(f"{where}: P must have shape {(D, 3 * H)}, got {P.shape}")
        if dtype is None:
            if W.dtype not in (np.float32, np.float64):
                raise TypeError(f"{where}: W has dtype {W.dtype}; pass dtype='float32' or 'float64' to convert it")
            dtype = W.dtype
        dtype = as_dtype(dtype)
        self.hidden_size = H
        self.kind = kind
        # initial states and lengths given as constants (None: zeros / full length, or fed at run time)
        self._const_inputs = {i: consts[self.inputs[i]] for i in (4, 5, 6) if self.inputs[i] in consts}

        bidir = D == 2
        kw = dict(bias=True, batch_first=self.layout == 1, bidirectional=bidir, dtype=dtype, backend=backend)
        layer: Layer
        if op == "LSTM":
            layer = LSTM(I, H, peepholes=P is not None and bool(np.any(P != 0)),  # zeros: no peepholes
                         input_forget=kind == "lstm_cifg", **kw)
        elif op == "GRU":
            layer = GRU(I, H, linear_before_reset=kind == "gru", **kw)
        else:
            layer = RNN(I, H, nonlinearity=kind[4:], **kw)
        order = _FROM_ONNX[op]
        for d in range(D):
            sfx = "_l0" + ("_reverse" if d else "")
            state = {"weight_ih" + sfx: _reorder(W[d], order, H), "weight_hh" + sfx: _reorder(R[d], order, H)}
            if B is None:
                state["bias_ih" + sfx] = state["bias_hh" + sfx] = np.zeros(G * H)
            else:
                state["bias_ih" + sfx] = _reorder(B[d, :G * H], order, H)
                state["bias_hh" + sfx] = _reorder(B[d, G * H:], order, H)
            if layer.peepholes:
                state["weight_peep" + sfx] = _reorder(cast(np.ndarray, P)[d], _PEEP_ORDER, H)
            layer.load_state_dict(state, strict=False)
        layer.eval()
        self.layer = layer

    def _check_activations(self, acts: Sequence[str] | None, kind: str, D: int) -> str:
        """The kind the node's ``activations`` give, or an error unless they are the defaults."""
        if acts is None:
            return kind
        acts = tuple(a.lower() for a in acts)
        default = _DEFAULT_ACTIVATIONS[self.op_type]
        if self.op_type == "RNN" and acts in (("relu",) * D,):
            return "rnn_relu"
        if acts == default * D:
            return kind
        allowed = "['Tanh'] or ['Relu'] per direction" if self.op_type == "RNN" else \
            f"the defaults {[a.capitalize() for a in default]} per direction"
        raise UnsupportedOnnxError(f"{self._where}: attribute 'activations' = {list(acts)} is not supported by "
                                   f"fastrnn (only {allowed})")

    def __repr__(self) -> str:
        return (f"RecurrentNode({self.op_type}, name={self.name!r}, direction={self.direction!r}, "
                f"layout={self.layout}, layer={self.layer!r})")

    def __call__(self, X: Any, sequence_lens: Any = None, initial_h: Any = None,
                 initial_c: Any = None) -> tuple[np.ndarray, ...]:
        layer = self.layer
        const = self._const_inputs
        sequence_lens = const.get(4) if sequence_lens is None else sequence_lens
        initial_h = const.get(5) if initial_h is None else initial_h
        initial_c = const.get(6) if initial_c is None else initial_c
        X = np.asarray(X)
        if X.ndim != 3:
            raise ValueError(f"{self._where}: X must have 3 axes, got shape {X.shape}")
        x = X.transpose(1, 0, 2) if self.layout == 1 else X  # [T, B, I]
        T, B = x.shape[0], x.shape[1]
        lengths = None
        if sequence_lens is not None:
            lengths = lengths_array(np.asarray(sequence_lens), B, T)

        def state(s: Any, name: str) -> np.ndarray | None:
            if s is None:
                return None
            s = np.asarray(s)
            if s.ndim == 3 and self.layout == 1:
                s = s.transpose(1, 0, 2)
            if s.dtype != layer.dtype:
                raise TypeError(f"{self._where}: {name} has dtype {s.dtype}, the layer computes in {layer.dtype}")
            return np.ascontiguousarray(s)

        h0, c0 = state(initial_h, "initial_h"), state(initial_c, "initial_c")
        hx: Any
        if self.op_type == "LSTM":
            hx = None if h0 is None and c0 is None else (h0, c0)
        else:
            hx = h0
        reverse = self.direction == "reverse"
        if reverse:
            x = _flip_within(x, lengths)
        with no_grad():  # x is time-major here; the layer takes its own layout
            if layer.batch_first:
                out, hn = layer(np.ascontiguousarray(x.transpose(1, 0, 2)), hx, lengths=lengths)
                out = out.transpose(1, 0, 2)
            else:
                out, hn = layer(np.ascontiguousarray(x), hx, lengths=lengths)
        if reverse:
            out = _flip_within(out, lengths)
        D, H = (2 if self.direction == "bidirectional" else 1), self.hidden_size
        Y = out.reshape(T, B, D, H).transpose(0, 2, 1, 3)  # [T, D, B, H]
        states = hn if isinstance(hn, tuple) else (hn,)
        if self.layout == 1:
            Y = Y.transpose(2, 0, 1, 3)
            states = tuple(s.transpose(1, 0, 2) for s in states)
        return (np.ascontiguousarray(Y),) + tuple(np.ascontiguousarray(s) for s in states)


def _flip_within(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """``x [T, B, ...]`` with each sequence b's first ``lengths[b]`` steps reversed (the rest zero)."""
    if lengths is None:
        return x[::-1]
    T = x.shape[0]
    t = np.arange(T)[:, None]
    src = lengths[None, :] - 1 - t  # [T, B]
    valid = src >= 0
    out = x[np.where(valid, src, 0), np.arange(x.shape[1])[None, :]]
    out[~valid] = 0
    return out


class OnnxModel:
    """What :func:`load` returns.

    ``nodes``: the model's LSTM/GRU/RNN nodes (:class:`RecurrentNode`) in graph order;
    ``layers``: their fastrnn layers; ``layer``: the single fastrnn layer the model is
    (a model of one forward or bidirectional node, or a model written by :func:`export`,
    whose stack comes back as one multi-layer layer with the exported settings), else a
    ``ValueError``. ``input_names``/``output_names``: the graph's run-time inputs and outputs.
    :meth:`run` runs the graph as ONNX Runtime's ``InferenceSession.run`` does.
    """

    def __init__(self, model: onnx.ModelProto, dtype: Any = None, backend: str | None = None,
                 constants: Mapping[str, Any] | None = None) -> None:
        onnx = _onnx()
        from onnx import numpy_helper

        graph = model.graph
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        if constants is not None:
            if not hasattr(constants, "keys"):
                raise TypeError(f"constants must be a mapping of input names to arrays, got {type(constants).__name__}")
            names = {i.name for i in graph.input}
            unknown = sorted(set(constants) - names)
            if unknown:
                raise ValueError(f"constants names {unknown}, which are not inputs of the graph {sorted(names)}")
            consts.update({k: np.asarray(v) for k, v in constants.items()})
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                consts[node.output[0]] = _constant_value(node, numpy_helper)
        self._model = model
        self._consts = consts
        self.input_names = [i.name for i in graph.input if i.name not in consts]
        self.output_names = [o.name for o in graph.output]
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.nodes = []
        for node in graph.node:
            if node.op_type in _OPS and node.domain in ("", "ai.onnx"):
                attrs = {a.name: _attr(onnx, a) for a in node.attribute}
                self.nodes.append(RecurrentNode(node, attrs, consts, dtype, backend))
        self._dtype, self._backend = dtype, backend

    def __repr__(self) -> str:
        return f"OnnxModel(inputs={self.input_names}, outputs={self.output_names}, nodes={self.nodes!r})"

    @property
    def layers(self) -> list[Layer]:
        """The fastrnn layers of :attr:`nodes`, in graph order."""
        return [n.layer for n in self.nodes]

    @property
    def layer(self) -> Layer:
        """The one fastrnn layer this model is: its single (not reverse-only) node's, or the stack
        :func:`export` wrote (rebuilt from its metadata and its nodes' weights); else a ValueError."""
        if _METADATA_KEY in self.metadata:
            return self._stacked_layer(json.loads(self.metadata[_METADATA_KEY]))
        if len(self.nodes) != 1:
            raise ValueError(f"the model has {len(self.nodes)} recurrent nodes and was not written by "
                             "fastrnn.onnx.export; take them from .nodes or .layers, or run the graph with .run")
        node = self.nodes[0]
        if node.direction == "reverse":
            raise UnsupportedOnnxError("the model's node runs direction='reverse', which no fastrnn layer does on its "
                                       "own; call model.nodes[0] (it runs the layer over reversed sequences) or .run")
        return node.layer

    def _stacked_layer(self, cfg: dict[str, Any]) -> Layer:
        """The multi-layer layer :func:`export` wrote, from its nodes' weights."""
        classes: dict[str, Any] = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
        cls = classes[cfg.pop("class")]
        if len(self.nodes) != cfg["num_layers"]:
            raise ValueError(f"the model's metadata describes {cfg['num_layers']} layers but it has "
                             f"{len(self.nodes)} recurrent nodes")
        layer: Layer = cls(**cfg, dtype=self.nodes[0].layer.dtype, backend=self._backend)
        state = {}
        for i, node in enumerate(self.nodes):
            if node.kind != layer.kind or node.hidden_size != layer.hidden_size \
                    or node.direction != ("bidirectional" if layer.bidirectional else "forward"):
                raise ValueError(f"recurrent node {i} ({node!r}) does not match the model's metadata {cfg}")
            for name, value in node.layer.state_dict().items():
                state[name.replace("_l0", f"_l{i}")] = value
        if not layer.bias:
            state = {k: v for k, v in state.items() if not k.startswith("bias")}
        for name, value in layer.state_dict().items():  # a node whose P is all zeros loaded without peepholes
            if name.startswith("weight_peep") and name not in state:
                state[name] = np.zeros_like(value)
        layer.load_state_dict(state)
        layer.eval()
        return layer

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[np.ndarray]:
        """Run the graph on NumPy: ``output_names`` (None: all) from ``input_feed`` (name -> array).

        Returns a list of arrays in the order of ``output_names``. The graph may contain
        recurrent nodes and shape glue only (``Transpose``, ``Reshape``, ``Squeeze``,
        ``Unsqueeze``, ``Concat``, ``Slice``, ``Identity``, ``Constant``); any other operator
        is an :class:`UnsupportedOnnxError` naming it.
        """
        graph = self._model.graph
        other = sorted({n.op_type for n in graph.node if n.op_type not in _OPS and n.op_type not in _GLUE_OPS})
        if other:
            raise UnsupportedOnnxError(f"OnnxModel.run runs recurrent nodes and shape glue ({', '.join(_GLUE_OPS)}) "
                                       f"only; this graph also has {other}: run it with onnxruntime, or use the "
                                       "layers from .nodes")
        if not hasattr(input_feed, "keys"):
            raise TypeError(f"input_feed must be a mapping of input names to arrays, got {type(input_feed).__name__}")
        unknown = sorted(set(input_feed) - set(self.input_names))
        missing = [n for n in self.input_names if n not in input_feed]
        if unknown or missing:
            raise ValueError(f"input_feed must give the model's inputs {self.input_names}: missing {missing}, "
                             f"unknown {unknown}")
        env = dict(self._consts)
        env.update({k: np.asarray(v) for k, v in input_feed.items()})
        rec = iter(self.nodes)
        for node in graph.node:
            if node.op_type in _OPS:
                rn = next(rec)
                X, lens, h0, c0 = (env[n] if n else None for n in (rn.inputs[0], *rn.inputs[4:7]))
                results = rn(X, lens, h0, c0) if rn.op_type == "LSTM" else rn(X, lens, h0)
            elif node.op_type == "Constant":
                continue
            else:
                results = (_glue(node, [env[n] if n else None for n in node.input]),)
            for name, value in zip(node.output, results):
                if name:
                    env[name] = value
        names = self.output_names if output_names is None else list(output_names)
        for n in names:
            if n not in env:
                raise ValueError(f"output {n!r} is not computed by the graph; its outputs are {self.output_names}")
        return [env[n] for n in names]

    __call__ = run


def _attr(onnx: ModuleType, a: onnx.AttributeProto) -> Any:
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


def _constant_value(node: onnx.NodeProto, numpy_helper: ModuleType) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return np.asarray(numpy_helper.to_array(a.t))
        if a.name in ("value_float", "value_int"):
            return np.array(a.f if a.name == "value_float" else a.i)
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(a.floats) if a.name == "value_floats" else list(a.ints))
    raise UnsupportedOnnxError(f"Constant node {node.name!r}: only value, value_float(s) and value_int(s) are supported")


def _glue(node: onnx.NodeProto, args: list[Any]) -> np.ndarray:
    """The NumPy result of one shape-glue node."""
    attrs = {a.name: a for a in node.attribute}
    x: np.ndarray = np.asarray(args[0])
    op = node.op_type
    if op == "Identity":
        return x
    if op == "Transpose":
        perm = list(attrs["perm"].ints) if "perm" in attrs else None
        return np.transpose(x, perm)
    if op == "Reshape":
        shape = [int(s) for s in args[1]]
        allowzero = "allowzero" in attrs and attrs["allowzero"].i
        shape = [x.shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
        return np.reshape(x, shape)
    if op in ("Squeeze", "Unsqueeze"):
        given = args[1] if len(args) > 1 and args[1] is not None else \
            (list(attrs["axes"].ints) if "axes" in attrs else None)
        axes = None if given is None else tuple(int(a) for a in given)
        if op == "Squeeze":
            return np.squeeze(x, axis=axes)
        if axes is None:
            raise ValueError(f"Unsqueeze node {node.name!r} has no axes")
        return np.expand_dims(x, axes)
    if op == "Concat":
        return np.concatenate(args, axis=attrs["axis"].i)
    # Slice (opset >= 10: starts, ends, axes, steps as inputs)
    starts, ends = args[1], args[2]
    slice_axes = args[3] if len(args) > 3 and args[3] is not None else range(len(starts))
    steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, slice_axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def load(model: str | os.PathLike[str] | bytes | onnx.ModelProto, *, dtype: Any = None, backend: str | None = None,
         constants: Mapping[str, Any] | None = None) -> OnnxModel:
    """Read an ONNX model's LSTM/GRU/RNN nodes into fastrnn layers.

    ``model``: a path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
    ``dtype``: the layers' dtype (default: the weights' own, float32 or float64).
    ``backend``: the layers' backend (default ``auto``).
    ``constants``: values for graph inputs that hold weights (name -> array), for models
    that take ``W``/``R``/``B`` as inputs rather than initializers; they are no longer
    inputs of the loaded model.
    Returns an :class:`OnnxModel` (``.nodes``, ``.layers``, ``.layer``, ``.run``).
    Raises :class:`UnsupportedOnnxError` naming any attribute or input fastrnn does not
    implement (custom activations, ``clip``).
    """
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        proto = onnx.load(os.fspath(model))
    elif isinstance(model, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    return OnnxModel(proto, dtype=dtype, backend=backend, constants=constants)


# ----------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------


def export(layer: Layer, path: str | os.PathLike[str] | None = None, *, lengths: bool = False,
           initial_states: bool = False, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Write a fastrnn ``RNN``/``LSTM``/``GRU`` layer as an ONNX model; returns the ``onnx.ModelProto``.

    The graph's inputs: ``x`` (``[T, B, input_size]``, ``[B, T, input_size]`` with
    ``batch_first``; T and B are dynamic), then with ``lengths=True`` ``lengths``
    (int32 ``[B]``, ONNX's ``sequence_lens``: each sequence's length, as the layer's
    ``lengths=``), with ``initial_states=True`` ``h0`` ``[num_layers*D, B, H]`` (and the
    LSTM's ``c0``). Its outputs: ``output`` (the layer's ``out``), ``h_n`` (and ``c_n``), as the
    layer returns them. ``path``: where to save it (None: only return it). Dropout is an
    identity in the exported (inference) graph.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(layer, (RNN, LSTM, GRU)):
        raise TypeError(f"layer must be a fastrnn RNN, LSTM or GRU, got {type(layer).__name__}")
    for name, flag in (("lengths", lengths), ("initial_states", initial_states)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if getattr(layer, "proj_size", 0):
        raise ValueError(f"layer has proj_size={layer.proj_size}: ONNX's LSTM operator has no projection, so a "
                         "projected LSTM cannot be written as one")
    op = "LSTM" if has_cell_state(layer.kind) else "GRU" if layer.kind.startswith("gru") else "RNN"
    L, D, H, G = layer.num_layers, 2 if layer.bidirectional else 1, layer.hidden_size, GATES[layer.kind]
    elem = helper.np_dtype_to_tensor_dtype(layer.dtype)
    inits, nodes = [], []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    x_shape: list[str | int] = ["B", "T", layer.input_size] if layer.batch_first else ["T", "B", layer.input_size]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if initial_states:
        inputs += [helper.make_tensor_value_info(s, elem, [L * D, "B", H]) for s in states]
    out_shape: list[str | int] = ["B", "T", D * H] if layer.batch_first else ["T", "B", D * H]
    outputs = [helper.make_tensor_value_info("output", elem, out_shape)]
    outputs += [helper.make_tensor_value_info(s.replace("0", "_n"), elem, [L * D, "B", H]) for s in states]

    x = "x"
    if layer.batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]))
        x = "x_time_major"
    flat = init("shape_T_B_flat", np.array([0, 0, -1], dtype=np.int64))
    order = _TO_ONNX[op]
    finals: dict[str, list[str]] = {s: [] for s in states}
    for k in range(L):
        W, R, Bias, P = [], [], [], []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = layer._weights(k, d)
            W.append(_reorder(w_ih, order, H))
            R.append(_reorder(w_hh, order, H))
            if layer.bias:
                Bias.append(np.concatenate([_reorder(cast(np.ndarray, b_ih), order, H),
                                            _reorder(cast(np.ndarray, b_hh), order, H)]))
            peep = layer._variants(k, d)["peep"]
            if peep is not None:
                P.append(_reorder(peep, _PEEP_ORDER, H))
        node_in = [x, init(f"W_l{k}", np.stack(W)), init(f"R_l{k}", np.stack(R)),
                   init(f"B_l{k}", np.stack(Bias)) if layer.bias else "", "lengths" if lengths else ""]
        if initial_states:
            bounds = [init(f"states_l{k}_{end}", np.array([v], dtype=np.int64)) for end, v in
                      (("start", k * D), ("end", (k + 1) * D))]
            for s in states:
                nodes.append(helper.make_node("Slice", [s, *bounds], [f"{s}_l{k}"]))
                node_in.append(f"{s}_l{k}")
        else:
            node_in += [""] * len(states)
        if P:
            node_in.append(init(f"P_l{k}", np.stack(P)))
        outs = [f"Y_l{k}"] + [f"{s.replace('0', '_n')}_l{k}" for s in states]
        attrs: dict[str, Any] = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if op == "GRU":
            attrs["linear_before_reset"] = int(layer.kind == "gru")
        if layer.kind == "rnn_relu":
            attrs["activations"] = ["Relu"] * D
        if layer.kind == "lstm_cifg":
            attrs["input_forget"] = 1
        nodes.append(helper.make_node(op, node_in, outs, name=f"{op.lower()}_l{k}", **attrs))
        for s, o in zip(states, outs[1:]):
            finals[s].append(o)
        # Y [T, D, B, H] -> [T, B, D*H], the next layer's input (directions side by side as in fastrnn)
        nodes.append(helper.make_node("Transpose", [f"Y_l{k}"], [f"Y_l{k}_TBDH"], perm=[0, 2, 1, 3]))
        last = k == L - 1
        x = "output_time_major" if (last and layer.batch_first) else ("output" if last else f"x_l{k + 1}")
        nodes.append(helper.make_node("Reshape", [f"Y_l{k}_TBDH", flat], [x]))
    if layer.batch_first:
        nodes.append(helper.make_node("Transpose", [x], ["output"], perm=[1, 0, 2]))
    for s in states:
        name = s.replace("0", "_n")
        if L == 1:
            nodes.append(helper.make_node("Identity", finals[s], [name]))
        else:
            nodes.append(helper.make_node("Concat", finals[s], [name], axis=0))

    graph = helper.make_graph(nodes, f"fastrnn_{type(layer).__name__}", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, producer_name="fastrnn", opset_imports=[helper.make_operatorsetid("", opset)])
    cfg: dict[str, Any] = dict(input_size=layer.input_size, hidden_size=H, num_layers=L, bias=layer.bias,
               batch_first=layer.batch_first, bidirectional=layer.bidirectional)
    if op == "RNN":
        cfg["nonlinearity"] = layer.kind[4:]
    if op == "GRU":
        cfg["linear_before_reset"] = layer.kind == "gru"
    if layer.peepholes:
        cfg["peepholes"] = True
    if layer.kind == "lstm_cifg":
        cfg["input_forget"] = True
    helper.set_model_props(model, {_METADATA_KEY: json.dumps({"class": type(layer).__name__, **cfg})})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
