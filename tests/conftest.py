"""Test fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.realcores import shared_cores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``real_core`` once per real vmcore.

    Those are the shared fixtures, or vmcores the QEMU lab makes: never none.
    """
    if "real_core" in metafunc.fixturenames:
        cores = shared_cores()
        metafunc.parametrize("real_core", cores, ids=[core.name for core in cores])


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """A capture run in-process sets umask 077 for the rest of its process (as
    the agent must): each test gets back the umask it started with, so no
    test sees another's."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
