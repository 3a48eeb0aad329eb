"""paramiko loaded without its package's ``__init__`` (capture/agent/targets/paramiko_client.py).

What pins it: the installed paramiko must be a version the loader stands
in for (an upgrade fails here, not in a capture); every name paramiko's
own modules take from the package must be one the loader gives; an ssh
session with each kind of user key and host key (Ed25519, ECDSA, RSA) runs
on the client modules alone, without the frozen agent's excluded modules
and without the whole package ever being completed; and code that imports
paramiko after the loader still gets all of it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from capture.agent.targets import paramiko_client
from tests.sshd import sshd

REPO = Path(__file__).resolve().parent.parent

FROZEN_EXCLUDES = f"""
import importlib.abc, sys
sys.path.insert(0, {str(REPO / "freeze")!r})
from freezelist import EXCLUDES

class Excluded(importlib.abc.MetaPathFinder):
    '''What the frozen agent leaves out cannot be imported here either.'''
    def find_spec(self, name, path, target=None):
        if any(name == e or name.startswith(e + ".") for e in EXCLUDES):
            raise ImportError(f"excluded from the frozen agent: {{name}}")
        return None

sys.meta_path.insert(0, Excluded())
"""


def python(program: str) -> str:
    """``program``'s stdout, run in a new interpreter from the repository."""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=REPO, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_installed_paramiko_is_one_the_loader_stands_in_for() -> None:
    """A paramiko outside SUPPORTED would still work (``import paramiko``,
    whole), but costs the crash kernel the heap this loader saves: upgrading
    means checking its ``__init__`` again, then widening SUPPORTED."""
    version = metadata.version("paramiko")
    low, high = paramiko_client.SUPPORTED
    assert low <= tuple(int(part) for part in version.split(".")[:2]) < high, version
    spec = paramiko_client.paramiko.__spec__
    assert spec is not None
    assert paramiko_client.installed_version(spec) == version


def _package_names_used(source: str, submodules: set[str]) -> set[str]:
    """Names a paramiko module takes from the package itself: ``from paramiko
    import X`` and ``paramiko.X`` (after ``import paramiko``), submodules aside."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "paramiko" and node.level == 0:
            names.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "paramiko"
        ):
            names.add(node.attr)
    return names - submodules


def test_every_name_paramikos_modules_take_from_the_package_is_given() -> None:
    """The client modules (and whatever they load) read from the package
    only what the loader puts there; and __init__ defines those same names
    (so the loader's stand-ins are what paramiko's own would be)."""
    loaded = json.loads(python(FROZEN_EXCLUDES + """
import json, sys
import capture.agent.targets.paramiko_client
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "paramiko")))
"""))  # fmt: skip
    assert "paramiko.transport" in loaded and "paramiko.sftp_client" in loaded
    directory = Path(paramiko_client.paramiko.__path__[0])
    submodules = {path.stem for path in directory.glob("*.py")}
    used: dict[str, set[str]] = {}
    for name in loaded:
        if name == "paramiko":
            continue
        source = (directory / f"{name.split('.', 1)[1]}.py").read_text()
        for attribute in _package_names_used(source, submodules):
            used.setdefault(attribute, set()).add(name)
    given = set(paramiko_client.PACKAGE_ATTRIBUTES)
    assert used, "no module reads the package: the scan found nothing"
    assert set(used) <= given, {name: used[name] for name in set(used) - given}
    init = ast.parse((directory / "__init__.py").read_text())
    defined = {
        alias.asname or alias.name
        for node in init.body if isinstance(node, ast.ImportFrom) for alias in node.names
    } | {
        target.id
        for node in init.body if isinstance(node, ast.Assign) for target in node.targets
        if isinstance(target, ast.Name)
    }  # fmt: skip
    assert given <= defined, given - defined


SESSION = """
import json, os, sys
from capture.agent.config import SshTarget
from capture.agent.targets import paramiko_client
from capture.agent.targets.ssh import SftpTarget

target = SftpTarget(SshTarget("root", "dumps"), {path!r}, {key!r}, flattened=False,
                    network_seconds=5)
target.open(lambda seconds: False)
directory = target.make_dump_dir("session")
dump = directory.create("vmcore")
data = os.urandom(3 << 20)  # more than the window of writes in flight
dump.write_at(0, data)
dump.sync()
dump.close()
directory.write_file("small", b"x" * 1000)
digest = directory.sha256("vmcore")
target.close()
print(json.dumps({{
    "whole": paramiko_client.whole_package(),
    "modules": sorted(sys.modules),
    "kinds": [type(key).__name__ for key in paramiko_client.paramiko.key_classes],
    "size": digest[0] if digest else None,
}}))
"""


@pytest.mark.parametrize(("host_key_type", "client_key_type"),
                         [("ed25519", "ed25519"), ("ecdsa", "rsa"), ("rsa", "ecdsa")])  # fmt: skip
def test_an_ssh_session_runs_on_the_client_modules_alone(
    tmp_path: Path, host_key_type: str, client_key_type: str
) -> None:
    """Host key check, public-key auth, mkdir, pipelined writes, fsync,
    rename, the server's sha256sum: with each kind of key, and the frozen
    agent's exclusions in force. Nothing asked the package for a name it
    lacks (the whole ``__init__`` never ran), and neither the server's nor
    the agent's side of paramiko, nor importlib.metadata, was loaded."""
    with sshd(tmp_path, host_key_type=host_key_type, client_key_type=client_key_type) as server:
        program = FROZEN_EXCLUDES + SESSION.format(path=str(tmp_path / "dumps"),
                                                   key=str(server.key))  # fmt: skip
        home = f"import os; os.environ['HOME'] = {str(server.home)!r}\n"
        facts = json.loads(python(home + program))
        written = tmp_path / "dumps" / "session" / "vmcore"
        assert written.stat().st_size == 3 << 20
    assert facts["size"] == 3 << 20
    assert facts["whole"] is False
    modules = set(facts["modules"])
    assert "paramiko.transport" in modules
    left_out = {"paramiko.client", "paramiko.agent", "paramiko.sftp_server", "paramiko.proxy",
                "paramiko.auth_strategy", "importlib.metadata", "email"}  # fmt: skip
    assert not modules & left_out, modules & left_out


def test_paramiko_imported_after_the_loader_is_whole() -> None:
    """``import paramiko`` after the loader (a test, a hook's own Python):
    the first name the client modules do not define runs paramiko's
    ``__init__`` in the same package, so every name is there."""
    out = python("""
from capture.agent.targets import paramiko_client
before = paramiko_client.whole_package()
import paramiko
client = paramiko.SSHClient  # not among the client modules' names
print(before, paramiko_client.whole_package(), paramiko is paramiko_client.paramiko,
      client.__module__, paramiko.Transport is paramiko_client.Transport)
""")  # fmt: skip
    assert out.split() == ["False", "True", "True", "paramiko.client", "True"]


def test_a_version_it_does_not_know_is_imported_whole() -> None:
    """Outside SUPPORTED the loader does ``import paramiko``: heavier, never broken."""
    out = python("""
import sys
from capture.agent.targets import paramiko_client
for name in [name for name in sys.modules if name.split(".")[0] == "paramiko"]:
    del sys.modules[name]
paramiko_client.SUPPORTED = ((0, 1), (0, 2))
package = paramiko_client._load()
print(paramiko_client.whole_package(), hasattr(package, "SSHClient"))
""")  # fmt: skip
    assert out.split() == ["True", "True"]
