"""The training utilities live in fastrnn/training/ and the command's tooling in fastrnn/tools/;
the public import paths fastrnn.data, fastrnn.nn, fastrnn.optim and fastrnn.train keep working as
the same module objects: for imports, pickles, monkeypatching and type checkers."""

from __future__ import annotations

import importlib
import pickle
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastrnn

PUBLIC = ("data", "nn", "optim", "train")
ROOT = Path(__file__).resolve().parent.parent


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_path_is_the_training_module(name):
    module = importlib.import_module(f"fastrnn.{name}")
    assert module is importlib.import_module(f"fastrnn.training.{name}")
    assert getattr(fastrnn, name) is module and sys.modules[f"fastrnn.{name}"] is module
    for attr in module.__all__:  # every public name resolves through the public path
        assert getattr(module, attr) is getattr(importlib.import_module(f"fastrnn.training.{name}"), attr)


def test_public_paths_import_first_in_a_fresh_process():
    proc = run("""
        from fastrnn.train import fit
        from fastrnn.nn import Linear
        import fastrnn.optim, fastrnn.training.train, fastrnn.training.optim
        assert fit is fastrnn.training.train.fit and fastrnn.optim is fastrnn.training.optim
        assert Linear is fastrnn.Linear
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_monkeypatch_through_the_public_path_reaches_the_code(monkeypatch):
    from fastrnn.training import nn as training_nn

    monkeypatch.setattr(fastrnn.nn, "is_grad_enabled", lambda: False)
    assert training_nn.is_grad_enabled() is False


def test_pickles_round_trip_and_old_pickles_load():
    model = fastrnn.nn.SequenceModel(1, 4, 1, dtype=np.float64, seed=0)
    optimizer = fastrnn.optim.Adam(model, lr=1e-2)
    again = pickle.loads(pickle.dumps(model))
    x = np.linspace(0, 1, 10).reshape(5, 2, 1)
    np.testing.assert_array_equal(again(x)[0], model(x)[0])
    assert type(pickle.loads(pickle.dumps(optimizer))) is fastrnn.optim.Adam
    # a pickle written before the move names fastrnn.nn: protocol 0 writes module names as text
    old = pickle.dumps(model, protocol=0).replace(b"fastrnn.training.nn\n", b"fastrnn.nn\n")
    assert b"cfastrnn.nn\nSequenceModel\n" in old
    proc = run(f"""
        import pickle, sys
        model = pickle.loads({old!r})  # nothing of fastrnn imported before
        assert type(model) is sys.modules["fastrnn.training.nn"].SequenceModel
        print(type(model).__module__)
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "fastrnn.training.nn", proc.stderr


def test_tooling_lives_in_tools():
    from fastrnn.__main__ import SUBCOMMANDS

    assert SUBCOMMANDS == {"info": "fastrnn.tools.info", "sine": "fastrnn.training.sine_cli",
                           "bench-report": "fastrnn.tools.bench_report"}
    for module in SUBCOMMANDS.values():
        assert callable(importlib.import_module(module).add_parser)


@pytest.mark.slow
def test_type_checker_reads_the_public_paths(tmp_path):
    if shutil.which("mypy") is None and importlib.util.find_spec("mypy") is None:
        pytest.skip('the type check needs mypy (pip install "fastrnn[typecheck]")')
    user = tmp_path / "user.py"
    user.write_text(textwrap.dedent("""
        import fastrnn.nn
        import fastrnn.train
        from fastrnn.data import make_sine_data
        from fastrnn.nn import SequenceModel
        from fastrnn.optim import Adam

        model: SequenceModel = fastrnn.nn.SequenceModel(1, 4, 1)
        reveal_type(Adam(model).step)
        reveal_type(make_sine_data)
        reveal_type(fastrnn.train.forecast)
        wrong: int = fastrnn.nn.Linear
    """).lstrip())
    package_root = Path(fastrnn.__file__).resolve().parent.parent
    env = dict(__import__("os").environ)
    # a source tree is named to mypy; an installed package is found (mypy refuses site-packages
    # in MYPYPATH)
    installed = any(package_root == Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()])
    if not installed:
        env["MYPYPATH"] = str(package_root)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                           "--no-error-summary", str(user)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=env)
    lines = proc.stdout.splitlines()
    revealed = [line for line in lines if "Revealed type" in line]
    assert len(revealed) == 3, proc.stdout + proc.stderr
    assert revealed[0].endswith('-> float | None"')  # Adam.step, through fastrnn.optim
    assert revealed[1].endswith('-> fastrnn.training.data.SineData"')  # through fastrnn.data
    assert revealed[2].startswith('user.py:10: note: Revealed type is "def (model: ')  # through fastrnn.train
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("user.py:11:") and "type[Linear]" in errors[0], proc.stdout
