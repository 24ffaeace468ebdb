"""The examples in examples/ run (in their --quick mode) and meet their stated figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if not EXAMPLES.is_dir():
    pytest.skip("the examples (examples/) are not beside these tests", allow_module_level=True)


def run_example(name, out, *args):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    returned = module.main(["--quick", "--out", str(out), *args])
    with open(out / "metrics.json") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(returned))  # the file holds what main returned
    return written


def test_sunspots_gru_beats_the_seasonal_naive_forecast(tmp_path):
    pytest.importorskip("statsmodels", reason='the examples need statsmodels (pip install "fastrnn[examples]")')
    pytest.importorskip("tqdm", reason='fastrnn.train.fit needs tqdm (pip install "fastrnn[examples]")')
    pytest.importorskip("matplotlib")
    m = run_example("sunspots_gru", tmp_path)
    assert m["test_years"] == [1969, 2008]
    # measured (quick mode, seeds 0-4): GRU RMSE 15.9-17.1, ARIMA(9,0,0) 17.3, seasonal naive 34.0
    assert m["gru"]["rmse"] < m["seasonal_naive"]["rmse"]
    assert m["gru"]["mae"] < m["seasonal_naive"]["mae"]
    assert m["gru"]["rmse"] < 1.15 * m["arima"]["rmse"]
    assert m["arima"]["rmse"] < m["seasonal_naive"]["rmse"]
    assert (tmp_path / "sunspots.png").stat().st_size > 10_000


def test_digits_lstm_classifies_the_test_images(tmp_path):
    pytest.importorskip("sklearn", reason='the examples need scikit-learn (pip install "fastrnn[examples]")')
    pytest.importorskip("matplotlib")
    m = run_example("digits_lstm", tmp_path)
    assert (m["n_train"], m["n_test"]) == (1347, 450)
    # measured (quick mode, 8 epochs, seeds 0-2): 0.924-0.933; chance is 0.1
    assert m["test_accuracy"] > 0.90
    assert (tmp_path / "digits.png").stat().st_size > 10_000


def test_sine_torch_forecasts_the_test_waves(tmp_path):
    torch = pytest.importorskip("torch", reason='the example needs PyTorch (pip install "fastrnn[torch]")')
    pytest.importorskip("matplotlib")
    threads = torch.get_num_threads()
    try:  # one thread: on a shared machine L-BFGS's small products are many times slower with more
        m = run_example("sine_torch", tmp_path, "--threads", "1")
    finally:
        torch.set_num_threads(threads)
    assert (m["waves"], m["length"], m["epochs"]) == (12, 300, 5)
    # measured (quick mode, seeds 0-2): next-sample test MSE 3e-5 to 9e-5; forecast MSE over the first
    # period 0.016-0.035 (a forecast of zeros scores 0.5, the mean of sin^2)
    assert m["train_loss"][-1] < 1e-3 * m["train_loss"][0]
    assert m["test_mse"] < 1e-3
    assert m["forecast_mse_period"] < 0.1
    assert (tmp_path / "sine_torch.png").stat().st_size > 10_000
