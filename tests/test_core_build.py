"""The compiled extension is built and importable (unless the build was switched off on purpose)."""

from __future__ import annotations

import os

import pytest

NO_EXTENSION = os.environ.get("FASTRNN_NO_EXTENSION", "").lower() not in ("", "0", "false", "no")


@pytest.mark.skipif(NO_EXTENSION, reason="installed with FASTRNN_NO_EXTENSION: the pure-Python package is under test")
def test_core_imports_and_reports_build_facts():
    import fastrnn._core as core

    info = core.build_info()
    assert set(info) >= {"version", "compiler", "cxx_flags", "build_type", "simd"}
    import fastrnn

    assert info["version"] == fastrnn.__version__
    assert "-ffast-math" not in info["cxx_flags"]


@pytest.mark.skipif(NO_EXTENSION, reason="installed with FASTRNN_NO_EXTENSION: no compiled module, no C ABI")
def test_c_abi_is_exported_and_its_header_installed():
    import fastrnn.capi as capi

    assert capi.header_path().is_file()
    assert capi.abi_version() == 5
