"""Training utilities against PyTorch: Linear, mse_loss, SGD, Adam, clip_grad_norm_, L-BFGS, forecast."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn.data import make_sine_data
from fastrnn.nn import Linear, SequenceModel, mse_loss
from fastrnn.optim import LBFGS, SGD, Adam, clip_grad_norm_
from fastrnn.train import evaluate, fit, forecast

pytestmark = pytest.mark.filterwarnings("ignore:fastrnn. the compiled extension:RuntimeWarning")

torch = pytest.importorskip("torch")
F64 = np.float64


class TorchSeq(torch.nn.Module):
    """The PyTorch twin of SequenceModel: attributes rnn and head, so state_dict names match."""

    def __init__(self, cell, hidden, layers):
        super().__init__()
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.rnn = cls(1, hidden, layers)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _twins(cell="lstm", hidden=12, layers=2, seed=0):
    model = SequenceModel(1, hidden, layers, cell=cell, dtype=F64, seed=seed)
    twin = TorchSeq(cell, hidden, layers).double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return model, twin


def _small_data(waves=10, length=40, seed=1):
    return make_sine_data(waves, length, n_test=2, seed=seed)


# ---------------------------------------------------------------------------
# Linear and mse_loss
# ---------------------------------------------------------------------------


def test_linear_forward_backward_matches_torch():
    rng = np.random.default_rng(0)
    lin = Linear(5, 3, dtype=F64, seed=1)
    tl = torch.nn.Linear(5, 3).double()
    tl.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x = rng.standard_normal((4, 2, 5))
    g = rng.standard_normal((4, 2, 3))
    xt = torch.from_numpy(x).requires_grad_()
    yt = tl(xt)
    yt.backward(torch.from_numpy(g))
    y = lin(x)
    dx = lin.backward(g)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.grads["weight"], tl.weight.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.grads["bias"], tl.bias.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_linear_init_range_names_and_errors():
    lin = Linear(16, 4, seed=0)
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert lin.weight.shape == (4, 16) and lin.bias.shape == (4,) and lin.weight.dtype == np.float32
    assert np.abs(lin.weight).max() <= 0.25 and np.abs(lin.bias).max() <= 0.25
    np.testing.assert_array_equal(Linear(16, 4, seed=0).weight, lin.weight)
    with pytest.raises(fastrnn.GradientError):
        lin.backward(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="in_features"):
        lin(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        lin(np.zeros((2, 16), np.float64))
    with fastrnn.no_grad():
        lin(np.zeros((2, 16), np.float32))
    with pytest.raises(fastrnn.GradientError):
        lin.backward(np.zeros((2, 4), np.float32))


def test_mse_loss_matches_torch():
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal((7, 3, 1)), rng.standard_normal((7, 3, 1))
    pt = torch.from_numpy(p).requires_grad_()
    lt = torch.nn.functional.mse_loss(pt, torch.from_numpy(t))
    lt.backward()
    loss, grad = mse_loss(p, t)
    assert isinstance(loss, float)
    assert loss == pytest.approx(lt.item(), rel=1e-14)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-14)
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(p, t[:3])


# ---------------------------------------------------------------------------
# SequenceModel
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sequence_model_forward_backward_matches_torch(cell):
    model, twin = _twins(cell, hidden=6, layers=2)
    d = _small_data(6, 20)
    pred = model(d.x_train)
    loss, grad = mse_loss(pred, d.y_train)
    model.backward(grad)
    tl = torch.nn.functional.mse_loss(twin(torch.from_numpy(d.x_train)), torch.from_numpy(d.y_train))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for name, p in twin.named_parameters():
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=name)


def test_sequence_model_parameters_are_shared_with_submodules():
    model = SequenceModel(1, 5, 2, dtype=F64, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "rnn.weight_ih_l0" and names[-2:] == ["head.weight", "head.bias"]
    assert len(model.parameters()) == 8 + 2
    model.load_state_dict({k: np.full_like(v, 0.5) for k, v in model.state_dict().items()})
    assert np.all(model.rnn.weight_hh_l1 == 0.5) and np.all(model.head.weight == 0.5)
    model.grads["head.bias"] += 1
    assert np.all(model.head.grads["bias"] == 1)
    model.zero_grad()
    assert all(np.all(g == 0) for g in model.grads.values())
    with pytest.raises(ValueError, match="cell"):
        SequenceModel(cell="foo")


# ---------------------------------------------------------------------------
# Optimizers: identical loss curves to PyTorch
# ---------------------------------------------------------------------------


def _curves(make_ours, make_theirs, steps, cell="lstm", clip=None):
    model, twin = _twins(cell)
    d = _small_data()
    opt, topt = make_ours(model), make_theirs(twin.parameters())
    x, y = torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)
    theirs = []
    for _ in range(steps):
        topt.zero_grad()
        loss = torch.nn.functional.mse_loss(twin(x), y)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), clip)
        topt.step()
        theirs.append(loss.item())
    hist = fit(model, d.x_train, d.y_train, opt, epochs=steps, clip=clip, progress=False)
    return np.array(hist["loss"]), np.array(theirs), model, twin


def _assert_same_model(model, twin, rtol):
    for name, p in twin.named_parameters():
        np.testing.assert_allclose(model.state_dict()[name], p.detach().numpy(), rtol=rtol, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("amsgrad,wd", [(False, 0.0), (True, 1e-2)])
def test_adam_loss_curve_matches_torch(amsgrad, wd):
    ours, theirs, model, twin = _curves(lambda m: Adam(m, lr=0.01, amsgrad=amsgrad, weight_decay=wd),
                                        lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=amsgrad, weight_decay=wd),
                                        steps=20)
    assert theirs[-1] < theirs[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    _assert_same_model(model, twin, 1e-8)


@pytest.mark.parametrize("nesterov,damp,wd", [(False, 0.0, 0.0), (True, 0.0, 1e-3), (False, 0.3, 0.0)])
def test_sgd_momentum_loss_curve_matches_torch(nesterov, damp, wd):
    kw = dict(lr=0.1, momentum=0.9, nesterov=nesterov, dampening=damp, weight_decay=wd)
    ours, theirs, model, twin = _curves(lambda m: SGD(m, **kw), lambda p: torch.optim.SGD(p, **kw), steps=20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    _assert_same_model(model, twin, 1e-8)


def test_gru_with_clipping_matches_torch():
    ours, theirs, _, _ = _curves(lambda m: Adam(m, lr=0.05), lambda p: torch.optim.Adam(p, lr=0.05),
                                 steps=8, cell="gru", clip=0.05)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(4)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5), "c": rng.standard_normal((2, 2, 2))}
    tparams = []
    for g in grads.values():
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.from_numpy(g.copy())
        tparams.append(p)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    norm = clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    assert norm == pytest.approx(tnorm.item(), rel=1e-13)
    for g, p in zip(grads.values(), tparams):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-13)


def test_optimizer_argument_errors():
    model = SequenceModel(1, 3, 1, dtype=F64, seed=0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(model, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        Adam(model, lr=-1)
    with pytest.raises(ValueError, match="beta1"):
        Adam(model, betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="named_parameters"):
        SGD(object())
    with pytest.raises(ValueError, match="L-BFGS"):
        fit(model, np.zeros((4, 2, 1)), np.zeros((4, 2, 1)), LBFGS(model), epochs=1, clip=1.0, progress=False)


def test_lbfgs_decreases_the_loss_and_leaves_params_at_the_result():
    model = SequenceModel(1, 8, 2, dtype=F64, seed=0)
    d = _small_data(8, 30)
    before = evaluate(model, d.x_train, d.y_train)
    opt = LBFGS(model, max_iter=10)
    hist = fit(model, d.x_train, d.y_train, opt, epochs=2, validation=(d.x_test, d.y_test), progress=False)
    assert len(hist["loss"]) == 2 and len(hist["val_loss"]) == 2
    assert hist["loss"][-1] < 0.5 * before
    assert hist["loss"][1] <= hist["loss"][0]
    assert evaluate(model, d.x_train, d.y_train) == pytest.approx(hist["loss"][-1], rel=1e-12)
    # SciPy's maxfun is checked between line searches, so a run may overshoot it by one line search
    assert 2 <= opt.n_evals <= 2 * (opt.hyper["max_eval"] + 20)
    assert hist["evaluations"] == opt.n_evals  # every closure call is one forward + backward pass


def test_lbfgs_minibatches_one_step_per_batch():
    model = SequenceModel(1, 5, 1, dtype=F64, seed=0)
    d = _small_data(10, 25)
    opt = LBFGS(model, max_iter=3)
    hist = fit(model, d.x_train, d.y_train, opt, epochs=2, batch_size=4, seed=0, progress=False)
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    assert "stopped" not in hist
    assert hist["evaluations"] == opt.n_evals >= 2 * 2  # 2 batches of the 8 waves per epoch, each >= 1 evaluation


def test_fit_minibatches_and_history():
    model = SequenceModel(1, 6, 1, cell="gru", dtype=F64, seed=0)
    d = _small_data(10, 25)
    seen = []
    hist = fit(model, d.x_train, d.y_train, Adam(model, lr=0.02), epochs=3, batch_size=3, seed=0,
               validation=(d.x_test, d.y_test), progress=True, callback=lambda e, r: seen.append((e, r["loss"])))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert len(hist["loss"]) == len(hist["val_loss"]) == len(hist["time"]) == 3
    assert all(np.isfinite(hist["loss"])) and all(t > 0 for t in hist["time"])
    assert hist["evaluations"] == 3 * 3  # 8 waves in batches of 3: 3 Adam steps per epoch


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_fit_runs_blas_on_one_thread_and_restores_it(optimizer):
    from threadpoolctl import threadpool_limits

    model = SequenceModel(1, 5, 1, dtype=F64, seed=0)
    d = _small_data(6, 20)
    with threadpool_limits(limits=2, user_api="blas"):  # what the user set, whatever the machine's default
        before = _blas_threads()
        assert before and all(n == 2 for n in before)
        seen = []
        opt = LBFGS(model, max_iter=3) if optimizer == "lbfgs" else Adam(model)
        fit(model, d.x_train, d.y_train, opt, epochs=2, progress=False, blas_threads=1,
            callback=lambda e, r: seen.append(_blas_threads()))
        assert seen == [[1] * len(before)] * 2
        assert _blas_threads() == before
        seen.clear()
        fit(model, d.x_train, d.y_train, Adam(model), epochs=1, progress=False, blas_threads=None,
            callback=lambda e, r: seen.append(_blas_threads()))
        assert seen == [before]
        # restored when training stops with an exception too
        def interrupt(epoch, record):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            fit(model, d.x_train, d.y_train, opt, epochs=3, progress=False, blas_threads=1, callback=interrupt)
        assert _blas_threads() == before


@pytest.mark.parametrize("backend", fastrnn.available_backends())
def test_fit_limits_blas_by_default_only_on_the_compiled_backend(backend):
    from threadpoolctl import threadpool_limits

    model = SequenceModel(1, 4, 1, dtype=F64, seed=0, backend=backend)
    d = _small_data(6, 20)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        seen = []
        fit(model, d.x_train, d.y_train, Adam(model), epochs=1, progress=False,
            callback=lambda e, r: seen.append(_blas_threads()))
    # the Numba and NumPy backends run their large products in BLAS: its threads are theirs
    assert seen == [[1] * len(before) if backend == "cpp" else before]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", "Auto"])
def test_fit_refuses_a_bad_blas_thread_count(bad):
    model = SequenceModel(1, 3, 1, dtype=F64, seed=0)
    with pytest.raises(ValueError, match="blas_threads"):
        fit(model, np.zeros((4, 2, 1)), np.zeros((4, 2, 1)), Adam(model), epochs=1, progress=False, blas_threads=bad)


# ---------------------------------------------------------------------------
# step and forecast: incremental state == whole sequence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_step_by_step_equals_whole_sequence(cell, batch_first):
    model = SequenceModel(1, 7, 2, cell=cell, batch_first=batch_first, dtype=F64, seed=2)
    d = make_sine_data(5, 30, n_test=2, seed=0, batch_first=batch_first)
    x = d.x_train
    with fastrnn.no_grad():
        full = model(x)
        state, steps = None, []
        for t in range(x.shape[1] if batch_first else x.shape[0]):
            y, state = model.step(x[:, t] if batch_first else x[t], state)
            steps.append(y)
    steps = np.stack(steps, axis=1 if batch_first else 0)
    np.testing.assert_allclose(steps, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forecast_equals_running_the_fed_back_sequence(cell):
    model = SequenceModel(1, 9, 2, cell=cell, dtype=F64, seed=5)
    d = _small_data(6, 40)
    warm, steps = d.x_test, 25
    fc, state = forecast(model, warm, steps, return_state=True)
    assert fc.shape == (steps, warm.shape[1], 1)
    # feeding the forecast back by hand through one whole-sequence run gives the same values
    seq = np.concatenate([warm, fc[:-1]], axis=0)
    with fastrnn.no_grad():
        full, full_state = model(seq, return_state=True)
    np.testing.assert_allclose(fc, full[warm.shape[0] - 1:], rtol=0, atol=1e-10)
    ref_h = full_state[0] if cell == "lstm" else full_state
    got_h = state[0] if cell == "lstm" else state
    # the returned state is the one after consuming fc[-2], as is the whole run's final state
    np.testing.assert_allclose(got_h, ref_h, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="steps"):
        forecast(model, warm, 0)


def test_forecast_batch_first_and_keeps_nothing_for_backward():
    model = SequenceModel(1, 4, 1, batch_first=True, dtype=F64, seed=0)
    d = make_sine_data(4, 20, n_test=1, seed=0, batch_first=True)
    fc = forecast(model, d.x_test, 5)
    assert fc.shape == (1, 5, 1)
    with pytest.raises(fastrnn.GradientError):
        model.backward(np.zeros((1, 19, 1)))
