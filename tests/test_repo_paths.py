"""Every repository path that the build configuration, CI and the documentation name exists
(a test file renamed or folded into another must not leave a command that runs nothing)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = ("tests", "bench", "examples", "tools", "docs", "csrc", "fastrnn", ".ci")
# a path that starts at one of the top folders; cibuildwheel's {project}/ prefix is dropped
PATH = re.compile(r"(?<![\w./-])(?:\{project\}/)?((?:%s)/[\w./{},-]*[\w}])" % "|".join(re.escape(t) for t in TOP))
# C++ headers are also named as they are included (<fastrnn/workspace.h>)
INCLUDE_DIRS = (ROOT, ROOT / "csrc" / "include")
# paths the build makes (git-ignored), and the source each is made from
BUILT = {"fastrnn/include/fastrnn.h": "csrc/include/fastrnn/fastrnn.h"}

if not (ROOT / "pyproject.toml").exists() or not (ROOT / ".ci" / "run").exists():
    pytest.skip("the repository (pyproject.toml, .ci/) is not beside these tests", allow_module_level=True)


def named_files() -> list[Path]:
    docs = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs").glob("*.rst"))
    return [ROOT / "pyproject.toml", ROOT / ".ci" / "run", ROOT / "README.md", ROOT / "bench" / "README.md",
            ROOT / "fastrnn" / "backends" / "CONTRACT.md", *docs]


def expand(path: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py``."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_the_pattern_finds_paths():
    found = PATH.findall('pytest {project}/tests/test_capi.py and "bench/README.md", fastrnn/{nn,optim}.pyi')
    assert found == ["tests/test_capi.py", "bench/README.md", "fastrnn/{nn,optim}.pyi"]
    assert expand(found[2]) == ["fastrnn/nn.pyi", "fastrnn/optim.pyi"]


@pytest.mark.parametrize("source", named_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist(source):
    assert source.exists(), source
    missing = [p for m in PATH.findall(source.read_text()) for p in expand(m)
               if not any((base / BUILT.get(p, p)).exists() for base in INCLUDE_DIRS)]
    assert not missing, f"{source.relative_to(ROOT)} names paths that do not exist: {missing}"
