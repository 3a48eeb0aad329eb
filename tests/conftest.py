"""Test fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from tests.realcores import shared_cores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``real_core`` once per real vmcore.

    Those are the shared fixtures, or vmcores the QEMU lab makes: never none.
    """
    if "real_core" in metafunc.fixturenames:
        cores = shared_cores()
        metafunc.parametrize("real_core", cores, ids=[core.name for core in cores])
