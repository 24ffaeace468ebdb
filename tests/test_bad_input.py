"""Bad input gets a ValueError/TypeError naming the argument, on every backend; never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn

F = np.float32


@pytest.fixture
def lstm(backend):
    return fastrnn.LSTM(3, 4, num_layers=2, backend=backend, seed=0)


@pytest.fixture
def gru(backend):
    return fastrnn.GRU(3, 4, backend=backend, seed=0)


X = np.zeros((5, 2, 3), F)


@pytest.mark.parametrize(
    "x, exc, words",
    [
        (np.zeros((5, 2, 3, 1), F), ValueError, "x must have shape"),
        (np.zeros((5,), F), ValueError, "x must have shape"),
        (np.zeros((5, 2, 4), F), ValueError, "input_size=3"),
        (np.zeros((5, 2, 3), np.float64), TypeError, "dtype float64"),
        (np.zeros((5, 2, 3), np.int64), TypeError, "floating-point"),
        (np.zeros((5, 2, 3), np.complex64), TypeError, "floating-point"),
        (np.zeros((5, 2, 3), bool), TypeError, "floating-point"),
        (np.zeros((0, 2, 3), F), ValueError, "at least one time step"),
        (np.zeros((5, 0, 3), F), ValueError, "at least one sequence"),
        (None, TypeError, "x"),
        ("abc", TypeError, "x"),
    ],
)
def test_bad_x(gru, x, exc, words):
    with pytest.raises(exc, match=words):
        gru(x)


@pytest.mark.parametrize(
    "h0, exc, words",
    [
        (np.zeros((1, 3, 4), F), ValueError, "h_0 must have shape \\(1, 2, 4\\)"),
        (np.zeros((2, 4), F), ValueError, "h_0"),
        (np.zeros((1, 2, 4), np.float64), TypeError, "h_0 has dtype float64"),
        ((np.zeros((1, 2, 4), F), np.zeros((1, 2, 4), F)), TypeError, "hx"),
    ],
)
def test_bad_h0(gru, h0, exc, words):
    with pytest.raises(exc, match=words):
        gru(X, h0)


def test_bad_lstm_states(lstm):
    with pytest.raises(TypeError, match="pair"):
        lstm(X, np.zeros((2, 2, 4), F))
    with pytest.raises(ValueError, match="c_0"):
        lstm(X, (np.zeros((2, 2, 4), F), np.zeros((2, 2, 5), F)))
    with pytest.raises(TypeError, match="c_0 has dtype"):
        lstm(X, (np.zeros((2, 2, 4), F), np.zeros((2, 2, 4), np.float64)))


@pytest.mark.parametrize(
    "lengths, exc, words",
    [
        ([5, 0], ValueError, "lengths must lie in \\[1, 5\\]"),
        ([5, -1], ValueError, "lengths must lie in"),
        ([6, 2], ValueError, "lengths must lie in"),
        ([5, 2, 3], ValueError, "lengths must have shape \\(2,\\)"),
        ([[5, 2]], ValueError, "lengths must have shape"),
        ([5.0, 2.0], TypeError, "lengths must be an array of integers"),
        ([5.0, np.nan], ValueError, "finite"),
        ([True, True], TypeError, "integers"),
        (["a", "b"], TypeError, "integers"),
        ([2**62, 1], ValueError, "lengths must lie in"),
    ],
)
def test_bad_lengths(gru, lengths, exc, words):
    with pytest.raises(exc, match=words):
        gru(X, lengths=lengths)


def test_lengths_with_unbatched_input(gru):
    with pytest.raises(ValueError, match="unbatched"):
        gru(np.zeros((5, 3), F), lengths=[5])


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(input_size=0, hidden_size=4), ValueError, "input_size"),
        (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size"),
        (dict(input_size=3, hidden_size=2.5), TypeError, "hidden_size"),
        (dict(input_size=3, hidden_size=4, num_layers=0), ValueError, "num_layers"),
        (dict(input_size=3, hidden_size=4, dropout=1.5), ValueError, "dropout"),
        (dict(input_size=3, hidden_size=4, dtype=np.int32), TypeError, "dtype"),
        (dict(input_size=3, hidden_size=4, dtype="float16"), TypeError, "dtype"),
        (dict(input_size=3, hidden_size=4, backend="tpu"), ValueError, "unknown backend"),
        (dict(input_size=3, hidden_size=4, backend=3), TypeError, "backend"),
        (dict(input_size=3, hidden_size=4, seed="x"), TypeError, "seed"),
        (dict(input_size=3, hidden_size=4, bias="yes"), TypeError, "bias"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        fastrnn.GRU(**kwargs)


def test_bad_nonlinearity_and_proj_size():
    with pytest.raises(ValueError, match="nonlinearity"):
        fastrnn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size"):
        fastrnn.LSTM(3, 4, proj_size=4)
    with pytest.raises(TypeError, match="linear_before_reset"):
        fastrnn.GRU(3, 4, linear_before_reset="no")


def test_backward_before_forward_and_twice(gru):
    with pytest.raises(fastrnn.GradientError, match="no forward has run"):
        gru.backward(np.zeros((5, 2, 4), F))
    out, _ = gru(X)
    gru.backward(np.ones_like(out))
    with pytest.raises(ValueError, match="already consumed"):
        gru.backward(np.ones_like(out))


def test_backward_after_no_grad_forward(gru):
    with fastrnn.no_grad():
        out, _ = gru(X)
    with pytest.raises(RuntimeError, match="no_grad"):
        gru.backward(np.ones_like(out))


def test_bad_grad_output(lstm):
    out, _ = lstm(X)
    with pytest.raises(ValueError, match="grad_output must have shape \\(5, 2, 4\\)"):
        lstm.backward(np.ones((5, 2, 3), F))
    with pytest.raises(TypeError, match="grad_output has dtype float64"):
        lstm.backward(np.ones((5, 2, 4)))
    with pytest.raises(ValueError, match="grad_c_n"):
        lstm.backward(np.ones((5, 2, 4), F), (None, np.ones((2, 2, 3), F)))
    lstm.backward(np.ones((5, 2, 4), F), (None, None))  # still usable after the rejected calls


def test_bad_cell_input(backend):
    cell = fastrnn.LSTMCell(3, 4, backend=backend)
    with pytest.raises(ValueError, match="input must have shape"):
        cell(np.zeros((2, 2, 3), F))
    with pytest.raises(ValueError, match="input_size=3"):
        cell(np.zeros((2, 5), F))
    with pytest.raises(ValueError, match="h must have shape \\(2, 4\\)"):
        cell(np.zeros((2, 3), F), (np.zeros((3, 4), F), None))
    with pytest.raises(TypeError, match="pair"):
        cell(np.zeros((2, 3), F), np.zeros((2, 4), F))
    with pytest.raises(ValueError, match="at least one row"):
        cell(np.zeros((0, 3), F))
    with pytest.raises(ValueError, match="input_size=3"):
        cell(np.zeros(2, F))
    h = np.zeros((2, 4), F)
    with pytest.raises(ValueError, match="c must have shape \\(2, 4\\)"):
        cell(np.zeros((2, 3), F), (h, h[:, :3]))
    with pytest.raises(TypeError, match="c has dtype float64"):
        cell(np.zeros((2, 3), F), [h, h.astype(np.float64)])
    rnn = fastrnn.RNNCell(3, 4, backend=backend)
    with pytest.raises(ValueError, match="hx must have shape \\(2, 4\\)"):
        rnn(np.zeros((2, 3), F), np.zeros((1, 4), F))
    with pytest.raises(TypeError, match="hx has dtype float64"):
        rnn(np.zeros((2, 3), F), np.zeros((2, 4)))
    with pytest.raises(fastrnn.GradientError):
        cell.backward((np.zeros((2, 4), F), None))


def test_load_state_dict_rejects_bad_entries():
    gru = fastrnn.GRU(3, 4, num_layers=2)
    sd = gru.state_dict()
    before = gru.state_dict()
    bad = dict(sd)
    del bad["weight_hh_l1"]
    with pytest.raises(ValueError, match="missing keys \\['weight_hh_l1'\\]"):
        gru.load_state_dict(bad)
    bad = dict(sd, extra=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected keys \\['extra'\\]"):
        gru.load_state_dict(bad)
    bad = dict(sd, weight_ih_l0=np.zeros((12, 4)))
    with pytest.raises(ValueError, match="weight_ih_l0.*\\(12, 3\\)"):
        gru.load_state_dict(bad)
    bad = dict(sd, bias_hh_l1=np.zeros(12, complex))
    with pytest.raises(TypeError, match="bias_hh_l1"):
        gru.load_state_dict(bad)
    with pytest.raises(TypeError, match="mapping"):
        gru.load_state_dict([1, 2])
    for k, v in gru.state_dict().items():  # a rejected load changes nothing
        np.testing.assert_array_equal(v, before[k])


def test_set_backend_errors():
    with pytest.raises(ValueError, match="unknown backend 'gpu'; expected"):
        fastrnn.set_backend("gpu")
    with pytest.raises(ValueError, match="positive integer"):
        fastrnn.set_num_threads(0)


def test_set_num_threads_refused_by_a_backend_changes_nothing():
    """The cpp kernels take at most 4096 threads: a count they refuse leaves every backend and
    fastrnn.get_num_threads() where they were."""
    if "cpp" not in fastrnn.available_backends():
        pytest.skip("the cpp backend (the one with an upper bound) is not available")
    from fastrnn.backends import cpp

    before = fastrnn.get_num_threads()
    with pytest.raises(ValueError, match="between 1 and 4096"):
        fastrnn.set_num_threads(10**6)
    assert fastrnn.get_num_threads() == before
    assert cpp.get_num_threads() == before


# --- errors that name their argument (issue 17, item 7) -----------------------------------------


@pytest.mark.parametrize("make, needle", [
    (lambda: fastrnn.LSTM(1, 2**62), "hidden_size=4611686018427387904"),
    (lambda: fastrnn.GRU(2**62, 3), "input_size=4611686018427387904"),
    (lambda: fastrnn.RNNCell(3, 2**62), "hidden_size="),
    (lambda: fastrnn.nn.Linear(2**62, 2), "in_features="),
])
def test_impossible_sizes_name_the_argument(make, needle):
    with pytest.raises((ValueError, MemoryError), match=needle):
        make()


@pytest.mark.parametrize("make", [
    lambda s: fastrnn.LSTM(1, 2, seed=s), lambda s: fastrnn.GRUCell(1, 2, seed=s),
    lambda s: fastrnn.nn.Linear(1, 2, seed=s), lambda s: fastrnn.data.make_sine_data(5, 10, seed=s),
])
def test_negative_seed_names_seed(make):
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        make(-1)
    with pytest.raises(TypeError, match="seed must be"):
        make(1.5)
    make(np.int64(3))


@pytest.mark.parametrize("what", ["bfloat16", "meta"])
def test_torch_tensors_numpy_cannot_hold_name_the_key(what):
    torch = pytest.importorskip("torch")
    gru = fastrnn.GRU(3, 4, seed=0)
    before = gru.state_dict()
    sd = {k: torch.from_numpy(v) for k, v in before.items()}
    sd["weight_hh_l0"] = (sd["weight_hh_l0"].to(torch.bfloat16) if what == "bfloat16"
                          else torch.empty(tuple(before["weight_hh_l0"].shape), device="meta"))
    with pytest.raises(TypeError, match="state_dict\\['weight_hh_l0'\\]"):
        gru.load_state_dict(sd)
    with pytest.raises(TypeError, match="parameter 'weight_hh_l0'"):
        gru.weight_hh_l0 = sd["weight_hh_l0"]
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_key_errors_are_value_errors():
    """README: bad input raises ValueError/TypeError; a missing or unexpected key is a ValueError."""
    gru = fastrnn.GRU(3, 4, seed=0)
    sd = gru.state_dict()
    sd.pop("bias_hh_l0")
    with pytest.raises(ValueError, match="missing keys"):
        gru.load_state_dict(sd)
    sd = gru.state_dict()
    sd["nope"] = np.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys"):
        gru.load_state_dict(sd)
