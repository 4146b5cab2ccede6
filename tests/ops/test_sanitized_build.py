"""`make sanitize` runs the op tests against the ASan + UBSan build named by
QKERNELS_EXTENSION: check that it is the build that got loaded and that it is
instrumented, so the sanitizer run cannot silently test the normal build."""

import os
from pathlib import Path

import pytest

import qkernels._library as library

SANITIZED = os.environ.get("QKERNELS_EXTENSION")
pytestmark = pytest.mark.skipif(not SANITIZED, reason="only under make sanitize")


def test_the_sanitized_extension_is_the_one_loaded():
    from qkernels import _C

    assert library.EXTENSION_ERROR is None
    assert Path(_C.__file__).resolve() == Path(SANITIZED).resolve()


def test_the_build_is_instrumented():
    binary = Path(SANITIZED).read_bytes()
    assert b"__asan_report_load" in binary
    assert b"__ubsan_handle_" in binary
