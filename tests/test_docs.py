"""The Sphinx documentation builds with warnings as errors, its pages hold what they promise,
and the Python snippets of its own pages (getting started, ONNX) run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


if not (DOCS / "conf.py").exists():
    pytest.skip("the documentation sources (docs/) are not beside these tests", allow_module_level=True)


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    pytest.importorskip("sphinx", reason='building the docs needs Sphinx (pip install "fastrnn[docs]")')
    pytest.importorskip("myst_parser", reason='building the docs needs myst-parser (pip install "fastrnn[docs]")')
    out = tmp_path_factory.mktemp("docs-html")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                           str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"sphinx -W failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def text(html, page):
    return (html / page).read_text()


def plain(html, page):
    """The page's text without its tags (code is split into highlighted spans)."""
    return re.sub(r"<[^>]+>", "", text(html, page))


def test_pages_are_built(html):
    for page in ("index", "getting-started", "api", "backends", "design", "benchmarks", "bench-2026-12-01",
                 "bench-2026-11-26", "capi", "onnx", "examples"):
        assert (html / f"{page}.html").exists(), page


def test_api_reference_documents_the_public_api(html):
    api = text(html, "api.html")
    import fastrnn

    for name in fastrnn.__all__:
        obj = getattr(fastrnn, name)
        if name.startswith("__") or not callable(obj):
            continue  # modules and the version are listed by their own sections
        public_module = obj.__module__.replace("fastrnn.training.", "fastrnn.")  # fastrnn.nn is fastrnn.training.nn
        assert f'id="fastrnn.{name}"' in api or f'id="{public_module}.{name}"' in api, name
    for name in ("fastrnn.LSTM.forward", "fastrnn.GRUCell.backward", "fastrnn.optim.Adam", "fastrnn.train.fit",
                 "fastrnn.data.make_sine_data", "fastrnn.onnx.load", "fastrnn.onnx.export", "fastrnn.nn.SequenceModel",
                 "fastrnn.tools.info.info", "fastrnn.tools.bench_report.main", "fastrnn.training.sine_cli.run"):
        assert f'id="{name}"' in api, name
    try:
        import fastrnn.capi  # noqa: F401
    except ImportError:
        assert "Not documented in this build" in api
    else:
        assert 'id="fastrnn.capi.layer_forward"' in api


def test_included_files_are_shown(html):
    backends_page = plain(html, "backends.html")  # the contract module's docstrings
    assert "layer_forward" in backends_page and "None means a zero gradient" in backends_page
    capi = plain(html, "capi.html")
    assert "FASTRNN_CDEF_BEGIN" in capi and "ffi.from_buffer" in capi  # the header and the README's Numba loop
    examples = plain(html, "examples.html")
    assert "def gru_forecast" in examples and "def cross_entropy" in examples
    assert (html / "_images" / "bench-2026-12-01-speedups.png").exists()
    design = plain(html, "design.html")
    if (DOCS / "DESIGN.md").exists():
        first_heading = re.search(r"^#\s+(.+)$", (DOCS / "DESIGN.md").read_text(), re.M).group(1)
        assert first_heading.split("`")[0].strip() in design
    else:
        assert "docs/DESIGN.md" in design


def python_blocks(page):
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)


def test_getting_started_training_snippet_runs():
    pytest.importorskip("tqdm", reason='fastrnn.train.fit needs tqdm (pip install "fastrnn[train]")')
    (block,) = python_blocks("getting-started.md")
    exec(compile(block, "getting-started.md", "exec"), {})  # it asserts its own loss drop


def test_onnx_page_snippet_runs(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import numpy as np

    (block,) = python_blocks("onnx.md")
    monkeypatch.chdir(tmp_path)  # it writes gru.onnx
    scope = {}
    exec(compile(block, "onnx.md", "exec"), scope)
    np.testing.assert_allclose(scope["out2"], scope["out"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scope["h_n2"], scope["h_n"], rtol=1e-5, atol=1e-5)
    assert scope["same_gru"].num_layers == 2 and scope["same_gru"].bidirectional
