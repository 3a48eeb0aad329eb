"""Test fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from tests.realcores import shared_cores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``real_core`` once per real vmcore."""
    if "real_core" in metafunc.fixturenames:
        cores = shared_cores()
        if not cores:
            raise pytest.UsageError(
                "no real vmcore: set KDUMP_CAPTURE_FIXTURES to the shared fixtures folder"
            )
        metafunc.parametrize("real_core", cores, ids=[core.name for core in cores])
