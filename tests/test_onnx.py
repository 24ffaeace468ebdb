"""fastrnn.onnx: export runs in ONNX Runtime to fastrnn's outputs; load reads ONNX's own operator
test cases and hand-built nodes (every direction, layout, GRU form, sequence_lens, initial states)
to the outputs of ONNX (expected data) or ONNX Runtime; unsupported features raise naming them."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

import fastrnn

onnx = pytest.importorskip("onnx", reason='onnx is not installed (pip install "fastrnn[onnx]")')
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastrnn.onnx as fo  # noqa: E402
from fastrnn.rnn import GATES  # noqa: E402

F32 = dict(rtol=1e-5, atol=1e-5)


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def make_layer(kind, num_layers, bidirectional, batch_first=False, bias=True, seed=0):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias, seed=seed)
    if kind.startswith("rnn_"):
        return fastrnn.RNN(3, 5, nonlinearity=kind[4:], **kw)
    if kind == "lstm":
        return fastrnn.LSTM(3, 5, **kw)
    return fastrnn.GRU(3, 5, linear_before_reset=kind == "gru", **kw)


KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig"]


# ----------------------------------------------------------------------------
# fastrnn -> ONNX -> ONNX Runtime (and back)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_export_runs_in_onnxruntime_to_fastrnn_outputs(kind, bidirectional, num_layers, with_lengths):
    rng = np.random.default_rng(1)
    layer = make_layer(kind, num_layers, bidirectional, seed=2)
    T, B = 7, 4
    D = 2 if bidirectional else 1
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5], dtype=np.int32) if with_lengths else None
    states = [rng.standard_normal((num_layers * D, B, 5)).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    hx = tuple(states) if kind == "lstm" else states[0]
    model = fo.export(layer, lengths=with_lengths, initial_states=True)
    feeds = {"x": x, "h0": states[0]}
    if kind == "lstm":
        feeds["c0"] = states[1]
    if with_lengths:
        feeds["lengths"] = lengths
    got = session(model).run(None, feeds)
    with fastrnn.no_grad():
        out, hn = layer.eval()(x, hx, lengths=lengths)
    want = [out, *(hn if kind == "lstm" else (hn,))]
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **F32)
    if with_lengths:  # padded steps are zero in both
        assert np.all(got[0][3:, 1] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_export_batch_first_without_bias_or_states(kind, tmp_path):
    rng = np.random.default_rng(3)
    layer = make_layer(kind, 2, True, batch_first=True, bias=False, seed=4)
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)  # [B, T, I]
    path = tmp_path / "layer.onnx"
    fo.export(layer, path)
    got = session(onnx.load(str(path))).run(None, {"x": x})
    with fastrnn.no_grad():
        out, hn = layer(x)
    np.testing.assert_allclose(got[0], out, **F32)
    np.testing.assert_allclose(got[1], hn[0] if kind == "lstm" else hn, **F32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_load_of_export_gives_back_the_layer(kind, bidirectional, tmp_path):
    layer = make_layer(kind, 2, bidirectional, batch_first=bidirectional, seed=5)
    path = tmp_path / "m.onnx"
    fo.export(layer, path, lengths=True)
    model = fo.load(path)
    back = model.layer
    assert type(back) is type(layer) and back.kind == layer.kind
    assert (back.num_layers, back.bidirectional, back.batch_first) == (layer.num_layers, layer.bidirectional,
                                                                         layer.batch_first)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value, err_msg=name)
    # the graph itself runs on NumPy to the layer's outputs
    x = np.random.default_rng(6).standard_normal((4, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4, 1], dtype=np.int32) if layer.batch_first else np.array([4, 1, 3, 2, 4], np.int32)
    with fastrnn.no_grad():
        out, hn = layer(x, lengths=lengths)
    got = model.run(None, {"x": x, "lengths": lengths})
    np.testing.assert_allclose(got[0], out, **F32)
    np.testing.assert_allclose(got[1], hn[0] if kind == "lstm" else hn, **F32)


def test_export_float64_model_is_valid_and_loads_as_float64():
    layer = fastrnn.GRU(3, 4, dtype="float64", seed=0)
    model = fo.load(fo.export(layer))
    assert model.layer.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    with fastrnn.no_grad():
        np.testing.assert_allclose(model.run(["output"], {"x": x})[0], layer(x)[0], rtol=1e-12, atol=1e-12)


def test_export_rejects_what_is_not_a_layer():
    with pytest.raises(TypeError, match="layer must be a fastrnn RNN, LSTM or GRU"):
        fo.export(fastrnn.LSTMCell(3, 4), None)
    with pytest.raises(TypeError, match="lengths must be a bool"):
        fo.export(fastrnn.LSTM(3, 4), None, lengths="yes")


# ----------------------------------------------------------------------------
# ONNX's own operator test cases (onnx.backend.test.case.node.{lstm,gru,rnn})
# ----------------------------------------------------------------------------


def _onnx_node_cases():
    """The expect() cases of ONNX's LSTM, GRU and RNN operator tests: importing a case module runs
    its export_* functions, which append to the package's list of node test cases."""
    cases_mod = importlib.import_module("onnx.backend.test.case.node")
    for name in ("lstm", "gru", "rnn"):
        importlib.import_module(f"onnx.backend.test.case.node.{name}")
    return [c for c in cases_mod._NodeTestCases if c.model.graph.node[0].op_type in ("LSTM", "GRU", "RNN")]


ONNX_CASES = _onnx_node_cases()
UNSUPPORTED_CASES: dict[str, str] = {}  # case name -> the UnsupportedOnnxError it raises


def test_onnx_node_cases_are_collected():
    names = {c.name for c in ONNX_CASES}
    assert len(names) >= 18
    assert {"test_lstm_bidirectional", "test_gru_reverse", "test_simple_rnn_batchwise", "test_rnn_seq_length",
            "test_lstm_with_peepholes"} <= names


@pytest.mark.parametrize("case", ONNX_CASES, ids=lambda c: c.name)
def test_onnx_operator_case(case):
    (inputs, expected), = case.data_sets
    node = case.model.graph.node[0]
    names = [n for n in node.input if n]
    position = {n: i for i, n in enumerate(node.input) if n}
    feeds = dict(zip(names, inputs))
    # the cases feed W, R, B (and P) as graph inputs: give them to load as constants
    constants = {n: feeds.pop(n) for n in list(feeds) if position[n] in (1, 2, 3, 7)}
    if case.name in UNSUPPORTED_CASES:
        with pytest.raises(fo.UnsupportedOnnxError, match=UNSUPPORTED_CASES[case.name]):
            fo.load(case.model, constants=constants)
        return
    model = fo.load(case.model, constants=constants)
    got = model.run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=case.rtol, atol=max(case.atol, 1e-6))


# ----------------------------------------------------------------------------
# hand-built nodes with random weights: load + run == ONNX Runtime
# ----------------------------------------------------------------------------


def _node_model(op, direction, layout=0, lbr=None, activations=None, with_bias=True, extra_attrs=None, seed=0,
                P=None):
    """One ONNX recurrent node with random initializer weights; X, sequence_lens, initial_h(, initial_c) inputs."""
    rng = np.random.default_rng(seed)
    G = GATES[{"LSTM": "lstm", "GRU": "gru", "RNN": "rnn_tanh"}[op]]
    H, I = 5, 3
    D = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(rng.standard_normal((D, G * H, I)).astype(np.float32) * 0.5, "W"),
             numpy_helper.from_array(rng.standard_normal((D, G * H, H)).astype(np.float32) * 0.5, "R")]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal((D, 2 * G * H)).astype(np.float32) * 0.5, "B"))
    ins = ["X", "W", "R", "B" if with_bias else "", "seq", "h0"]
    outs = ["Y", "Y_h"]
    if op == "LSTM":
        ins.append("c0")
        outs.append("Y_c")
        if P is not None:
            inits.append(numpy_helper.from_array(P, "P"))
            ins.append("P")
    attrs = dict(hidden_size=H, direction=direction, layout=layout, **(extra_attrs or {}))
    if lbr is not None:
        attrs["linear_before_reset"] = lbr
    if activations is not None:
        attrs["activations"] = activations
    node = helper.make_node(op, ins, outs, name="rec", **attrs)
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", f, None), helper.make_tensor_value_info("seq", TensorProto.INT32, None),
         helper.make_tensor_value_info("h0", f, None)]
        + ([helper.make_tensor_value_info("c0", f, None)] if op == "LSTM" else []),
        [helper.make_tensor_value_info(o, f, None) for o in outs], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])


NODE_VARIANTS = [("RNN", None, None), ("RNN", None, ["Relu"]), ("LSTM", None, None),
                 ("GRU", 1, None), ("GRU", 0, None)]


@pytest.mark.parametrize("op,lbr,acts", NODE_VARIANTS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru_lbr1", "gru_lbr0"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_load_node_matches_onnxruntime(op, lbr, acts, direction, layout):
    D = 2 if direction == "bidirectional" else 1
    if acts is not None:
        acts = acts * D
    rng = np.random.default_rng(7)
    T, B, H = 6, 4, 5
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    seq = np.array([6, 2, 4, 1], dtype=np.int32)
    states = [rng.standard_normal((D, B, H)).astype(np.float32) for _ in range(2 if op == "LSTM" else 1)]
    # ONNX Runtime runs layout 0 only: the layout-1 model is the same node with batch-first inputs and outputs
    want = session(_node_model(op, direction, 0, lbr, acts)).run(
        None, dict(X=x, seq=seq, h0=states[0], **({"c0": states[1]} if op == "LSTM" else {})))
    model = fo.load(_node_model(op, direction, layout, lbr, acts))
    (node,) = model.nodes
    assert node.direction == direction and node.layout == layout
    if layout == 1:
        x = x.transpose(1, 0, 2)
        states = [s.transpose(1, 0, 2) for s in states]
        want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    got = model.run(None, dict(X=x, seq=seq, h0=states[0], **({"c0": states[1]} if op == "LSTM" else {})))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **F32)
    if direction == "reverse":
        with pytest.raises(fo.UnsupportedOnnxError, match="direction='reverse'"):
            model.layer
    else:
        assert model.layer is node.layer and node.layer.batch_first == (layout == 1)


def test_zero_peepholes_are_no_peepholes():
    want = fo.load(_node_model("LSTM", "forward")).nodes[0]
    got = fo.load(_node_model("LSTM", "forward", P=np.zeros((1, 15), np.float32))).nodes[0]
    assert not got.layer.peepholes
    assert got.layer.state_dict().keys() == want.layer.state_dict().keys()
    for name, value in want.layer.state_dict().items():
        np.testing.assert_array_equal(got.layer.state_dict()[name], value)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_load_lstm_with_peepholes_matches_onnxruntime(direction):
    D = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(8)
    T, B, H = 6, 4, 5
    P = (rng.standard_normal((D, 3 * H)) * 0.5).astype(np.float32)
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    feeds = dict(X=x, seq=np.array([6, 2, 4, 1], dtype=np.int32),
                 h0=rng.standard_normal((D, B, H)).astype(np.float32),
                 c0=rng.standard_normal((D, B, H)).astype(np.float32))
    want = session(_node_model("LSTM", direction, P=P)).run(None, feeds)
    model = fo.load(_node_model("LSTM", direction, P=P))
    layer = model.nodes[0].layer
    assert layer.peepholes
    # fastrnn's blocks (i, f, o) are P's (i, o, f)
    np.testing.assert_array_equal(layer.weight_peep_l0, np.concatenate([P[0, :H], P[0, 2 * H:], P[0, H:2 * H]]))
    got = model.run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **F32)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("peepholes", [False, True], ids=["plain", "peep"])
def test_load_lstm_with_input_forget_matches_onnxruntime(direction, peepholes):
    """input_forget=1 (f = 1 - i; ONNX Runtime's CPU LSTM implements it) loads as
    LSTM(input_forget=True) and runs to ONNX Runtime's outputs."""
    D = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(10)
    T, B, H = 6, 4, 5
    P = (rng.standard_normal((D, 3 * H)) * 0.5).astype(np.float32) if peepholes else None
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    feeds = dict(X=x, seq=np.array([6, 2, 4, 1], dtype=np.int32),
                 h0=rng.standard_normal((D, B, H)).astype(np.float32),
                 c0=rng.standard_normal((D, B, H)).astype(np.float32))
    node = _node_model("LSTM", direction, P=P, extra_attrs=dict(input_forget=1))
    want = session(node).run(None, feeds)
    plain = session(_node_model("LSTM", direction, P=P)).run(None, feeds)
    assert not np.allclose(want[0], plain[0], **F32)  # the attribute changes ONNX Runtime's result
    model = fo.load(node)
    layer = model.nodes[0].layer
    assert layer.kind == "lstm_cifg" and layer.peepholes == peepholes
    got = model.run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **F32)


def test_load_refuses_an_input_forget_other_than_0_or_1():
    with pytest.raises(ValueError, match="input_forget must be 0 or 1, got 2"):
        fo.load(_node_model("LSTM", "forward", extra_attrs=dict(input_forget=2)))


@pytest.mark.parametrize("input_forget", [False, True], ids=["peep", "peep-cifg"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_export_lstm_with_peepholes_runs_in_onnxruntime_and_loads_back(bidirectional, input_forget):
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, peepholes=True, input_forget=input_forget,
                         seed=2)
    model = fo.export(layer, lengths=True, initial_states=True)
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    assert sum(1 for n in nodes if len(n.input) == 8 and n.input[7]) == 2
    assert [{a.name: helper.get_attribute_value(a) for a in n.attribute}.get("input_forget", 0) for n in nodes] == \
        [int(input_forget)] * 2
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4], dtype=np.int32)
    h0, c0 = (rng.standard_normal((2 * D, 3, 4)).astype(np.float32) for _ in range(2))
    with fastrnn.no_grad():
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    got = session(model).run(None, dict(x=x, lengths=lengths, h0=h0, c0=c0))
    for g, w in zip(got, (out, h_n, c_n)):
        np.testing.assert_allclose(g, w, **F32)
    back = fo.load(model).layer
    assert back.peepholes and back.kind == layer.kind and back.state_dict().keys() == layer.state_dict().keys()
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value, err_msg=name)


@pytest.mark.parametrize("kwargs,named", [
    (dict(op="LSTM", extra_attrs=dict(clip=3.0)), "'clip'"),
    (dict(op="GRU", activations=["Sigmoid", "Relu"]), "'activations'"),
    (dict(op="RNN", activations=["Sigmoid"]), "'activations'"),
    (dict(op="RNN", activations=["Affine"], extra_attrs=dict(activation_alpha=[2.0])), "'activation_alpha'"),
])
def test_unsupported_features_raise_naming_them(kwargs, named):
    op = kwargs.pop("op")
    with pytest.raises(fo.UnsupportedOnnxError, match=named):
        fo.load(_node_model(op, "forward", **kwargs))


def test_run_rejects_other_operators_and_bad_feeds():
    model = _node_model("GRU", "forward")
    model.graph.node.append(helper.make_node("Relu", ["Y_h"], ["act"]))
    model.graph.output.append(helper.make_tensor_value_info("act", TensorProto.FLOAT, None))
    loaded = fo.load(model)
    assert len(loaded.layers) == 1  # the layers are there even if the graph cannot run
    with pytest.raises(fo.UnsupportedOnnxError, match=r"\['Relu'\]"):
        loaded.run(None, {"X": np.zeros((2, 1, 3), np.float32)})
    plain = fo.load(_node_model("GRU", "forward"))
    with pytest.raises(ValueError, match=r"missing \['seq', 'h0'\]"):
        plain.run(None, {"X": np.zeros((2, 1, 3), np.float32)})


def test_weights_fed_at_run_time_need_constants():
    model = _node_model("RNN", "forward")
    w = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    del model.graph.initializer[0]
    with pytest.raises(fo.UnsupportedOnnxError, match=r"constants=\{'W': array\}"):
        fo.load(model)
    loaded = fo.load(model, constants={"W": numpy_helper.to_array(w)})
    assert "W" not in loaded.input_names


def test_load_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="model must be a path, bytes or an onnx.ModelProto"):
        fo.load(42)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ModuleNotFoundError,
                       match=r'^fastrnn.onnx needs onnx, which is not installed: pip install "fastrnn\[onnx\]"$'):
        fo.load("model.onnx")
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[onnx\]"'):
        fo.export(fastrnn.GRU(2, 3), None)


@pytest.mark.parametrize("name, value", [
    ("hidden_size", 4.0), ("hidden_size", "4"), ("hidden_size", 0), ("hidden_size", -4), ("layout", "x"),
    ("direction", 3), ("activations", [1, 2, 3]), ("input_forget", "x"), ("activations", "Sigmoid"),
])
def test_load_refuses_attributes_of_the_wrong_type_naming_them(name, value):
    """An attribute of another ONNX type than the operator's schema (or hidden_size < 1) is a
    ValueError naming it (it was accepted, or raised AttributeError / a bare int() error)."""
    model = fo.export(fastrnn.LSTM(3, 4, seed=0))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))
    with pytest.raises(ValueError, match=f"'{name}'"):
        fo.load(model)
