"""``kdump-capture self-test``: is everything a capture needs in this install?

Made for the frozen agent (scripts/build-agent): the image build runs it, so
a module or library the freeze left out fails the build, not the capture.
It imports every module of the package (the ssh target only with ``--ssh``)
and every module they import inside functions, where a frozen tree misses
them first; round-trips pages through each codec with the real writer and
reader; and parses a kdump.conf. With ``--ssh`` it also imports paramiko as
the ssh target does (its client modules, capture/agent/targets/paramiko_client.py),
loads an Ed25519, an ECDSA and an RSA key made in memory as a private key
and as a known_hosts line, signs and verifies with each, and encodes a host
name with the idna codec (what resolving any network target's server
needs). Nothing is written but a temporary directory, removed after.
"""

from __future__ import annotations

import dis
import importlib
import logging
import os
import pkgutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from types import CodeType, ModuleType

import capture
from capture import __version__

__all__ = ("SSH_MODULES", "run_self_test")

SSH_MODULES = (
    "capture.agent.targets.ssh", "capture.agent.targets.paramiko_client", "paramiko",
    "cryptography", "nacl", "bcrypt", "_cffi_backend",
)  # fmt: skip
"""What only an ssh target loads: a tree without its SSH part lacks them."""

_OPTIONAL_MODULES = ("cramjam", "capture.dumpfile._zstd")
"""Imported lazily when present (snappy; our zstd binding, which the frozen
agent leaves out for zstandard): missing is no failure."""

_REQUIRED_CODECS = ("lzo", "zlib", "zstd")
_PAGE_SIZE = 4096
_PAGES = 16
_CONFIG = """\
# the lines Fedora's kdump.conf ships, and ours
path /var/crash
core_collector makedumpfile -l --message-level 7 -d 31
failure_action shell
final_action reboot
kdump_capture_deadline 1800
"""

Check = Callable[[], str]
"""One check: returns what it proved, raises what is missing."""


def run_self_test(ssh: bool = False) -> int:
    """Run every check; print one summary line; 0 if all passed, else 1."""
    checks: list[tuple[str, Check]] = [
        ("modules", lambda: _import_modules(ssh)),
        ("codecs", _round_trip_codecs),
        ("config", _parse_config),
    ]
    if ssh:
        checks.append(("ssh", _ssh_keys))
    logging.getLogger("capture").setLevel(logging.ERROR)  # the synthetic core's warnings
    passed, failed = [], []
    for name, check in checks:
        try:
            passed.append(f"{name} {check()}")
        except Exception as error:  # each failure is reported, then the next check runs
            failed.append(f"{name}: {type(error).__name__}: {error}")
    if failed:
        print(f"self-test FAILED ({'; '.join(failed)})", file=sys.stderr)
        return 1
    print(f"self-test ok: kdump-capture {__version__}, {', '.join(passed)}")
    return 0


def _import_modules(ssh: bool) -> str:
    """Import each module of the package, then what their functions import."""
    skipped = () if ssh else SSH_MODULES
    names = [
        name for name in _package_modules()
        if name != "capture.__main__" and not _within(name, skipped)  # __main__ would run
    ]  # fmt: skip
    if len(names) < 20:  # the walk found nothing: a tree that cannot list its own package
        raise ImportError(f"only {len(names)} modules of capture found")
    missing: list[str] = []
    lazily: set[str] = set()
    for name in names:
        module = _try_import(name, missing)
        if module is not None and module.__spec__ and module.__spec__.loader:
            lazily.update(_imports_in(module.__spec__.loader, name))
    lazy_names = sorted(lazily - set(names))
    for name in lazy_names:
        if not _within(name, skipped + _OPTIONAL_MODULES):
            _try_import(name, missing)
    if ssh:
        for name in SSH_MODULES:
            _try_import(name, missing)
        # socket.getaddrinfo encodes a host name (an ssh or NFS server's) with
        # this codec, which needs unicodedata: the tree's network.files, which
        # a local target's image leaves out
        try:
            "server.example".encode("idna")
        except (LookupError, ImportError) as error:
            missing.append(f"encodings.idna ({error})")
    if missing:
        raise ImportError("cannot import " + ", ".join(missing))
    return f"{len(names)}+{len(lazy_names)} imported"


def _package_modules() -> Iterator[str]:
    yield "capture"
    for info in pkgutil.walk_packages(capture.__path__, "capture."):
        yield info.name


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def _try_import(name: str, missing: list[str]) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing.append(f"{name} ({error})")
        return None


def _imports_in(loader: object, name: str) -> set[str]:
    """The absolute imports anywhere in a module's code, functions included."""
    get_code = getattr(loader, "get_code", None)
    code = get_code(name) if get_code else None
    return set(_import_names(code)) if isinstance(code, CodeType) else set()


def _import_names(code: CodeType) -> Iterator[str]:
    level = 0
    for instruction in dis.get_instructions(code):
        if instruction.opname == "LOAD_CONST" and isinstance(instruction.argval, int):
            level = instruction.argval  # IMPORT_NAME's level is the constant before its fromlist
        if instruction.opname == "IMPORT_NAME" and level == 0:
            yield str(instruction.argval)
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _import_names(constant)


def _round_trip_codecs() -> str:
    """Dump a synthetic vmcore with each codec (and as ELF, and flattened)
    through the real writer, then read every page back through the reader."""
    from capture.dumpfile.codecs import CODECS

    names = [name for name in CODECS if name in _REQUIRED_CODECS or _has_snappy(name)]
    with tempfile.TemporaryDirectory(prefix="kdump-capture-self-test-") as directory:
        vmcore = os.path.join(directory, "vmcore")
        pages = _write_synthetic_vmcore(vmcore)
        for name in names:
            _dump_and_compare(vmcore, pages, os.path.join(directory, name), codec=name)
        _dump_and_compare(vmcore, pages, os.path.join(directory, "elf"), elf=True)
        _dump_and_compare(vmcore, pages, os.path.join(directory, "flat"), flattened=True)
    return " ".join(names)


def _has_snappy(name: str) -> bool:
    if name != "snappy":
        return False
    try:
        import cramjam  # noqa: F401
    except ImportError:
        return False
    return True


def _dump_and_compare(
    vmcore: str, pages: dict[int, bytes], output: str, codec: str = "none",
    elf: bool = False, flattened: bool = False,
) -> None:  # fmt: skip
    from capture.dumpfile.dump import DumpOptions, dump_vmcore
    from capture.dumpfile.reader import open_dump
    from capture.filter.levels import DumpLevel

    options = DumpOptions(DumpLevel(1), codec, elf=elf, flattened=flattened)
    report = dump_vmcore(vmcore, output, options)
    if report.outcome.incomplete:
        raise RuntimeError(f"{codec}: the dump came out incomplete")
    with open_dump(output) as dump:
        for paddr, page in pages.items():
            if any(page) and dump.read_phys(paddr, _PAGE_SIZE) != page:
                raise RuntimeError(f"{codec}: page at {paddr:#x} read back differs")


def _write_synthetic_vmcore(path: str) -> dict[int, bytes]:
    """An x86_64 ELF vmcore of 16 pages (every other one zero, the others of
    varied text, so each codec compresses them) and the pages by address.
    Level 1 filters only zero pages, which needs no kernel symbols."""
    from capture.vmcore.elf64 import EHDR, ET_CORE, PHDR, PT_LOAD, PT_NOTE

    base = 0x1000000
    pages = {
        base + index * _PAGE_SIZE: bytes(_PAGE_SIZE)
        if index % 2 == 0
        else (f"page {index} of the self-test " * 200).encode()[:_PAGE_SIZE]
        for index in range(_PAGES)
    }
    notes = _note(b"VMCOREINFO", f"OSRELEASE=0-self-test\nPAGESIZE={_PAGE_SIZE}\n".encode())
    note_offset = EHDR.size + 2 * PHDR.size
    data_offset = -(-(note_offset + len(notes)) // _PAGE_SIZE) * _PAGE_SIZE
    size = _PAGES * _PAGE_SIZE
    ident = b"\x7fELF\x02\x01\x01".ljust(16, b"\0")
    header = EHDR.pack(ident, ET_CORE, 62, 1, 0, EHDR.size, 0, 0, EHDR.size, PHDR.size, 2, 0, 0, 0)
    header += PHDR.pack(PT_NOTE, 0, note_offset, 0, 0, len(notes), len(notes), 0)
    header += PHDR.pack(PT_LOAD, 7, data_offset, 0xFFFF888000000000 + base, base, size, size, 0)
    with open(path, "wb") as file:
        file.write((header + notes).ljust(data_offset, b"\0"))
        file.write(b"".join(pages.values()))
    return pages


def _note(name: bytes, desc: bytes) -> bytes:
    def padded(data: bytes) -> bytes:
        return data + bytes(-len(data) % 4)

    return struct.pack("<III", len(name) + 1, len(desc), 0) + padded(name + b"\0") + padded(desc)


def _parse_config() -> str:
    from capture.agent.config import parse_config

    parsed = parse_config(_CONFIG, "self-test kdump.conf")
    if parsed.skipped:
        raise ValueError("; ".join(map(str, parsed.skipped)))
    collector = parsed.config.core_collector
    if collector is None or "-l" not in collector.value:
        raise ValueError(f"core_collector read as {collector!r}")
    return "parsed"


def _ssh_keys() -> str:
    """A key of each kind a user's key or a server's host key may be (Ed25519,
    ECDSA, RSA), made in memory and loaded as the ssh target loads them: a
    private key file through ``PKey.from_path``, the public key as a
    known_hosts line through ``HostKeys``; each signs and verifies. That is
    cryptography's, nacl's and bcrypt's native parts, which paramiko loads
    lazily, and the package attributes paramiko_client stands in for."""
    import base64

    import bcrypt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from capture.agent.targets.paramiko_client import HostKeys, PKey, paramiko, whole_package

    made: dict[str, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]
    made = {
        "ssh-ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ecdsa-sha2-nistp256": ec.generate_private_key(ec.SECP256R1()),
        "ssh-rsa": rsa.generate_private_key(65537, 1024),  # small: only made to be used once
    }
    with tempfile.TemporaryDirectory(prefix="kdump-capture-self-test-") as directory:
        for kind, private in made.items():
            path = os.path.join(directory, kind)
            with open(path, "wb") as file:
                file.write(private.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.OpenSSH,
                                                 serialization.NoEncryption()))  # fmt: skip
            key = PKey.from_path(path)
            hosts = HostKeys()
            line = f"server.example {kind} {base64.b64encode(key.asbytes()).decode()}\n"
            with open(path + ".known_hosts", "w") as file:
                file.write(line)
            hosts.load(path + ".known_hosts")
            public = (hosts.lookup("server.example") or {}).get(kind)
            if public is None or public.asbytes() != key.asbytes():
                raise RuntimeError(f"a {kind} known_hosts line does not load")
            signature = key.sign_ssh_data(b"self-test")
            signature.rewind()
            if not public.verify_ssh_sig(b"self-test", signature):
                raise RuntimeError(f"a {kind} signature does not verify")
    bcrypt.kdf(b"self-test", b"salt", 16, 1, ignore_few_rounds=True)
    how = "whole" if whole_package() else "client modules"
    return f"paramiko {paramiko.__version__} ({how}) ed25519 ecdsa rsa"
