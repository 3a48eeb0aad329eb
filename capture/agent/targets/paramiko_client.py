"""paramiko's client side, loaded without its package's ``__init__``.

``import paramiko`` runs ``paramiko/__init__.py``, which imports every part
of paramiko, the server's (``server`` aside, which the transport needs) and
the agent's among them, and ``importlib.metadata`` (with ``email``,
``zipfile``, ``csv``, ``datetime``...) only to read its own version. In the
crash kernel that is heap the dump needs: measured on the host (the freeze's
exclusions applied, the rest of the agent already imported), ``import
paramiko`` adds 154 modules and 5.35 MiB of Python objects, the modules
below 118 and 3.98 MiB.

So when the installed paramiko is one whose ``__init__`` this module stands
in for (``SUPPORTED``), the package is created from its spec without running
``__init__``, given the few attributes its own modules read from it
(``__version__``: the transport's client banner; ``RSAKey``, ``ECDSAKey``,
``Ed25519Key`` and ``key_classes``: ``PKey.from_path`` and
``PKey.from_type_string``, which known_hosts lines go through), and the
client's modules are imported from it. Any other version, or paramiko
already imported, is used as ``import paramiko`` gives it.
tests/test_ssh_paramiko.py pins both halves: that every name those modules
take from the package is one given here, and that the installed version is
in ``SUPPORTED`` (an upgrade fails that test, not a capture).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = (
    "SUPPORTED",
    "AuthenticationException",
    "ConfigParseError",
    "HostKeys",
    "Message",
    "PKey",
    "SFTPAttributes",
    "SFTPClient",
    "SSHConfig",
    "SSHException",
    "Transport",
    "installed_version",
    "paramiko",
    "protocol",
    "whole_package",
)

SUPPORTED = ((5, 0), (6, 0))
"""paramiko versions (from, up to but without) whose ``__init__`` is stood
in for: 5.x, whose package attributes tests/test_ssh_paramiko.py checks."""
CLIENT_MODULES = (
    "transport", "sftp_client", "sftp_attr", "sftp", "hostkeys", "config", "pkey",
    "rsakey", "ecdsakey", "ed25519key", "message", "ssh_exception",
)  # fmt: skip
"""What the ssh target uses; ``transport`` brings the rest it needs."""
PACKAGE_ATTRIBUTES = ("__version__", "RSAKey", "ECDSAKey", "Ed25519Key", "key_classes")
"""What paramiko's own modules read from the package (given here)."""


def installed_version(spec: ModuleSpec) -> str | None:
    """The version in the ``paramiko-*.dist-info`` beside the package (what
    ``__init__`` asks importlib.metadata for), None if there is none."""
    locations = spec.submodule_search_locations or []
    for location in locations:
        parent = os.path.dirname(os.path.abspath(location))
        try:
            names = sorted(os.listdir(parent))
        except OSError:
            continue
        for name in names:
            if name.startswith("paramiko-") and name.endswith(".dist-info"):
                return _metadata_version(os.path.join(parent, name, "METADATA"))
    return None


def _metadata_version(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as metadata:
            for line in metadata:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():  # the headers end at the first empty line
                    break
    except OSError:
        pass
    return None


def _supported(version: str) -> bool:
    try:
        numbers = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    low, high = SUPPORTED
    return low <= numbers < high


def whole_package() -> bool:
    """Has ``paramiko`` been imported as ``import paramiko`` gives it (its
    ``__init__`` run), rather than as this module loads it?"""
    package = sys.modules.get("paramiko")
    return package is not None and not getattr(package, "_kdump_capture_client_only", False)


def _load() -> ModuleType:
    if "paramiko" in sys.modules:
        return sys.modules["paramiko"]
    spec = importlib.util.find_spec("paramiko")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("No module named 'paramiko'", name="paramiko")
    version = installed_version(spec)
    if version is None or not _supported(version):
        return importlib.import_module("paramiko")  # as paramiko's __init__ has it
    package = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    vars(package).update(__version__=version, _kdump_capture_client_only=True)
    sys.modules["paramiko"] = package
    try:
        modules = {name: importlib.import_module(f"paramiko.{name}") for name in CLIENT_MODULES}
        rsa = modules["rsakey"].RSAKey
        ecdsa = modules["ecdsakey"].ECDSAKey
        ed25519 = modules["ed25519key"].Ed25519Key
    except BaseException:
        for name in [name for name in sys.modules if name.split(".")[0] == "paramiko"]:
            del sys.modules[name]
        raise
    vars(package).update(
        RSAKey=rsa,
        ECDSAKey=ecdsa,
        Ed25519Key=ed25519,
        key_classes=[rsa, ed25519, ecdsa],  # __init__'s order
        __getattr__=_completing(package, spec),
    )
    return package


def _completing(package: ModuleType, spec: ModuleSpec) -> Callable[[str], object]:
    """The package's ``__getattr__`` (PEP 562): a name it lacks (``paramiko.SSHClient``
    in code that imported paramiko after us: the tests, a hook's Python) runs
    paramiko's own ``__init__`` in it, then is looked up again. Names of the
    form ``__x__`` are not completed (introspection asks for those)."""

    def complete(name: str) -> object:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module 'paramiko' has no attribute {name!r}")
        del package.__dict__["__getattr__"]
        package.__dict__.pop("_kdump_capture_client_only", None)
        assert spec.loader is not None  # find_spec found a package
        spec.loader.exec_module(package)  # every name __init__ defines, in the same module
        return getattr(package, name)

    return complete


paramiko = _load()

from paramiko import sftp as protocol  # noqa: E402 (after the package is set up)
from paramiko.config import SSHConfig  # noqa: E402
from paramiko.hostkeys import HostKeys  # noqa: E402
from paramiko.message import Message  # noqa: E402
from paramiko.pkey import PKey  # noqa: E402
from paramiko.sftp_attr import SFTPAttributes  # noqa: E402
from paramiko.sftp_client import SFTPClient  # noqa: E402
from paramiko.ssh_exception import (  # noqa: E402
    AuthenticationException,
    ConfigParseError,
    SSHException,
)
from paramiko.transport import Transport  # noqa: E402
