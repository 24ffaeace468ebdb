"""Sphinx configuration of fastrnn's documentation.

Build: ``python -m sphinx -W -b html docs <out>`` (warnings are errors). The pages are
MyST Markdown and reStructuredText; the API reference comes from the docstrings, and the
backend contract, the design notes, the C ABI usage and the examples are included from
the files that hold them (nothing is copied into the docs).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The pages document the fastrnn that imports here: an installed package (with its compiled
# extension: what CI builds the docs against, with PYTHONSAFEPATH=1) or else the source tree next
# to them (with an extension built in place by tools/dev-build.sh, when there is one).
try:
    import fastrnn
except ImportError:
    sys.path.insert(0, str(ROOT))
    import fastrnn  # noqa: E402

try:  # the C ABI's Python module needs the compiled extension and its installed header
    import fastrnn.capi  # noqa: F401,E402
    CAPI_ERROR = None
except ImportError as exc:
    CAPI_ERROR = str(exc)

project = "fastrnn"
author = "the fastrnn authors"
copyright = "fastrnn authors, MIT licence"
version = release = fastrnn.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# DESIGN.md (the design of the fast path) is read through design.md when it exists
exclude_patterns = ["_build", "DESIGN.md", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]  # links in included repository files that point at other files

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = True
autosummary_generate = False

html_theme = "furo" if __import__("importlib").util.find_spec("furo") else "alabaster"
html_title = f"fastrnn {release}"


def _design_source(app, docname, source):
    """design.md includes DESIGN.md when it is there, else keeps its placeholder text."""
    if docname == "design" and (HERE / "DESIGN.md").exists():
        source[0] = "```{include} DESIGN.md\n:relative-images:\n:relative-docs: .\n```\n"


def _api_source(app, docname, source):
    """Without the compiled extension the C ABI modules cannot be imported: say so in their place."""
    if docname == "api" and CAPI_ERROR is not None:
        note = (".. note::\n\n   Not documented in this build: ``fastrnn.capi`` does not import here "
                f"({CAPI_ERROR}).\n")
        for module in ("fastrnn.capi", "fastrnn.capi_njit"):
            source[0] = source[0].replace(f".. automodule:: {module}\n", note)


def setup(app):
    app.connect("source-read", _design_source)
    app.connect("source-read", _api_source)
    return {"parallel_read_safe": True}
