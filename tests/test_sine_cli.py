"""``python -m fastrnn sine`` end to end on a tiny configuration, and its handling of bad options."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

TINY = ["--waves", "5", "--length", "40", "--hidden", "8", "--epochs", "2", "--future", "150", "--no-progress"]


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "fastrnn", "sine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("extra", [[], ["--cell", "gru", "--optimizer", "adam", "--dtype", "float32", "--layers", "1"]])
def test_sine_end_to_end(tmp_path, extra):
    out = tmp_path / "result"
    proc = _run([*TINY, "--out", str(out), *extra], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = proc.stdout
    assert "epoch   1/2" in text and "epoch   2/2" in text
    assert "final next-step test MSE" in text and "forecast MSE over one period" in text
    assert "time per epoch" in text
    for name in ("forecast.png", "loss.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("backend", "test_mse", "forecast_mse_period", "forecast_mse", "time_per_epoch", "wall_time",
                "train_loss", "test_loss"):
        assert key in metrics, key
    for key in ("test_mse", "forecast_mse_period", "forecast_mse", "time_per_epoch", "wall_time"):
        assert math.isfinite(metrics[key]) and metrics[key] >= 0, key
    assert len(metrics["train_loss"]) == len(metrics["test_loss"]) == 2
    assert all(math.isfinite(v) for v in metrics["train_loss"] + metrics["test_loss"])
    assert metrics["forecast_period_samples"] == 126
    # forward + backward passes: L-BFGS's line search may take several per epoch, Adam takes one
    if extra:
        assert metrics["evaluations"] == 2
    else:
        assert metrics["evaluations"] >= 2
    assert f"in {metrics['evaluations']} forward + backward passes" in text
    assert metrics["dtype"] == ("float32" if extra else "float64")


def test_curriculum_stages_train_on_sub_problems_first(tmp_path):
    # TINY trains on 2 waves of 39 input samples: the stages are 20 x 1, 39 x 1, then the whole set (39 x 2)
    out = tmp_path / "result"
    proc = _run([*TINY, "--out", str(out), "--curriculum", "20:1:1,all:1:2,all:all:5"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "curriculum: 1 epoch(s) on 20 samples x 1 waves, then 2 epoch(s) on 39 samples x 1 waves" in proc.stdout
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert [ln.split()[1] for ln in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5"]  # the all:all stage is dropped
    assert lines[0].endswith("[20 x 1]") and lines[2].endswith("[39 x 1]") and lines[4].endswith("[39 x 2]")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["curriculum"] == [{"samples": 20, "waves": 1, "epochs": 1}, {"samples": 39, "waves": 1, "epochs": 2}]
    assert metrics["epoch_stage"] == [0, 1, 1, 2, 2]
    assert len(metrics["train_loss"]) == len(metrics["test_loss"]) == 5


def test_curriculum_parsing_and_clipping():
    from fastrnn.training.sine_cli import DEFAULT_CURRICULUM, _curriculum, _stages

    assert _curriculum("none") == _curriculum(" None ") == []
    assert _curriculum(DEFAULT_CURRICULUM) == [(250, 32, 8), (None, 32, 3)]
    assert _curriculum("all:all:4") == [(None, None, 4)]
    # the example's data: 97 training waves of 999 inputs
    assert _stages(_curriculum(DEFAULT_CURRICULUM), 999, 97, 2) == [(250, 32, 8), (999, 32, 3), (999, 97, 2)]
    assert _stages([], 999, 97, 15) == [(999, 97, 15)]
    # clipped to the data; a stage that becomes the whole set is dropped
    assert _stages([(250, 32, 8), (5000, 500, 3)], 100, 10, 1) == [(100, 10, 1)]
    assert _stages([(50, 500, 3)], 100, 10, 1) == [(50, 10, 3), (100, 10, 1)]


def test_help_explains_options(tmp_path):
    proc = _run(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    for opt in ("--cell", "--hidden", "--layers", "--optimizer", "--epochs", "--lr", "--backend", "--dtype",
                "--threads", "--seed", "--out", "--waves", "--length", "--no-progress", "--curriculum"):
        assert opt in proc.stdout, opt


BAD = [
    (["--cell", "foo"], "--cell"),
    (["--hidden", "-3"], "--hidden"),
    (["--hidden", "abc"], "--hidden"),
    (["--epochs", "0"], "--epochs"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--dtype", "float16"], "--dtype"),
    (["--lr", "-1", "--optimizer", "adam"], "--lr"),
    (["--lr", "0.8"], "lbfgs"),  # L-BFGS takes no learning rate: a clear error, not a silent no-op
    (["--waves", "3"], "--waves"),
    (["--threads", "0"], "--threads"),
    (["--curriculum", "250:32"], "SAMPLES:WAVES:EPOCHS"),
    (["--curriculum", "250:32:all"], "EPOCHS must be an integer"),
    (["--curriculum", "0:32:2"], "SAMPLES must be >= 1"),
    (["--curriculum", "250:x:2"], "WAVES must be an integer or 'all'"),
    (["--curriculum", "250:32:0"], "EPOCHS must be >= 1"),
]


@pytest.mark.parametrize("bad,needle", [BAD[0], BAD[1], BAD[7]])
def test_bad_options_exit_nonzero_without_traceback(tmp_path, bad, needle):
    proc = _run([*TINY, "--out", str(tmp_path / "o"), *bad], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("bad,needle", BAD)
def test_bad_options_in_process(tmp_path, capsys, bad, needle):
    from fastrnn.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["sine", *TINY, "--out", str(tmp_path / "o"), *bad])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


# --- bad output paths, degenerate periods, divergence: one line, non-zero, valid JSON --------------


def _one_line_error(proc, needle):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]  # (argparse prints its usage above)
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]


@pytest.mark.parametrize("where", ["file", "under_file", "under_missing_file_parent"])
def test_bad_out_is_one_line_error(tmp_path, where):
    f = tmp_path / "afile"
    f.write_text("x")
    out = {"file": f, "under_file": f / "sub", "under_missing_file_parent": f / "a" / "b"}[where]
    proc = _run([*TINY, "--out", str(out)], cwd=tmp_path)
    _one_line_error(proc, "--out")
    assert proc.returncode == 2
    assert "epoch" not in proc.stdout  # refused before training


@pytest.mark.parametrize("period", ["0.3", "1", "1.99"])
def test_period_below_two_samples_is_refused(tmp_path, period):
    proc = _run([*TINY, "--out", str(tmp_path / "o"), "--period", period], cwd=tmp_path)
    _one_line_error(proc, "--period")
    assert proc.returncode == 2
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_diverging_run_fails(tmp_path):
    out = tmp_path / "o"
    proc = _run([*TINY, "--out", str(out), "--optimizer", "sgd", "--lr", "1e300"], cwd=tmp_path)
    _one_line_error(proc, "diverged")
    assert proc.returncode == 1
    if (out / "metrics.json").exists():  # whatever is written is strict JSON
        json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def test_metrics_json_is_strict_even_with_non_finite_values():
    from fastrnn.training.sine_cli import _finite_or_null

    text = json.dumps(_finite_or_null({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"}), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": "x"}


@pytest.mark.parametrize("bad", ["inf_x", "nan_y", "inf_val"])
def test_fit_refuses_non_finite_data_before_any_step(bad):
    import numpy as np

    import fastrnn
    from fastrnn.optim import SGD
    from fastrnn.train import fit

    model = fastrnn.nn.SequenceModel(1, 4, num_layers=1, dtype=np.float64, seed=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.ones((5, 2, 1))
    y = np.ones((5, 2, 1))
    val = (np.ones((5, 1, 1)), np.ones((5, 1, 1)))
    if bad == "inf_x":
        x[2, 1, 0] = np.inf
    elif bad == "nan_y":
        y[0, 0, 0] = np.nan
    else:
        val[0][1, 0, 0] = -np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit(model, x, y, SGD(model, lr=0.1), epochs=2, validation=val, progress=False)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # no step was taken


def test_other_commands_report_unreadable_files_in_one_line(tmp_path):
    """The same class as --out: a file named on the command line that cannot be read is one error line."""
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench-report", str(tmp_path / "missing.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _one_line_error(proc, "missing.json")
