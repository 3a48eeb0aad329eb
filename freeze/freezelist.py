"""What the frozen agent leaves out, and the parts an image may leave out.

Read by agent.spec (the freeze) and scripts/build-agent (ssh.files,
snappy.files, network.files). Each exclusion is something no capture imports but something
else in the tree would pull in (the self-test imports what ours import).
"""

from typing import NamedTuple


class Part(NamedTuple):
    """Packages an image can leave out when its configuration does not use
    them: collected as files (not in the executable's archive), and listed
    in the tree's <name>.files by scripts/build-agent."""

    packages: tuple[str, ...]
    """Importable packages (their directories under _internal/)."""
    distributions: tuple[str, ...]
    """Their distributions, whose *.dist-info PyInstaller copies (paramiko reads its version)."""
    extensions: tuple[str, ...] = ()
    """Extension modules (top-level, or the standard library's lib-dynload/)
    only these packages or this kind of target load."""


PARTS = {
    # An ssh target: paramiko and its native crypto (13 MiB of the 30).
    "ssh": Part(
        ("paramiko", "cryptography", "nacl", "bcrypt", "cffi"),
        ("paramiko", "cryptography", "pynacl", "bcrypt", "cffi"),
        ("_cffi_backend",),
    ),
    # core_collector makedumpfile -p: raw snappy from cramjam (4.3 MiB).
    "snappy": Part(("cramjam",), ("cramjam",)),
    # A network target (ssh, nfs): socket.getaddrinfo encodes a host name with
    # the idna codec, whose stringprep loads unicodedata (1.1 MiB, 0.5 MiB of
    # a zstd squash image); nothing a local or raw target runs imports it.
    "network": Part((), (), ("unicodedata",)),
}

EXCLUDES = [
    # Development and test suites some stdlib module names
    "tkinter", "_tkinter", "unittest", "doctest", "pydoc", "pydoc_data", "ensurepip",
    "lib2to3", "distutils", "setuptools", "pkg_resources", "pip", "test", "idlelib",
    "pytest", "_pytest", "hypothesis", "pyfakefs", "mypy", "drgn", "elftools", "lz4",
    # paramiko treats invoke as optional (only ssh_config's Match exec); it pulls
    # unittest.mock and asyncio into every import of paramiko.
    "invoke",
    # The ssh target loads paramiko's client modules without its package's
    # __init__ (capture/agent/targets/paramiko_client.py), which alone imports
    # these: its version through importlib.metadata (with email, 0.4 MB of the
    # core's archive), SSHClient, the agent, the server's SFTP, ProxyCommand,
    # the auth strategies, Windows' pageant and OpenSSH agent.
    "importlib.metadata", "email", "paramiko.client", "paramiko.agent",
    "paramiko.sftp_server", "paramiko.sftp_si", "paramiko.sftp_handle", "paramiko.proxy",
    "paramiko.auth_strategy", "paramiko.win_pageant", "paramiko.win_openssh",
    "paramiko._winapi",
    # zstandard's cffi backend duplicates the C one and would pull cffi into the core.
    "zstandard.backend_cffi",
    # Our zstd batch binding would bring the system's libzstd (0.75 MiB) beside
    # zstandard's own copy, which the agent needs to read zstd back; a capture
    # kernel has one CPU, where the binding's gain (threads that pay) is small.
    "capture.dumpfile._zstd",
    # ProcessPoolExecutor's machinery: compression threads are threads.
    "multiprocessing", "_multiprocessing", "_posixshmem",
    # OpenSSL (libcrypto, libssl): hashlib has built-in sha256/md5/sha1/sha512, and
    # cryptography carries its own OpenSSL; nothing speaks TLS.
    "_hashlib", "_ssl", "ssl",
    # Archive formats only shutil and tarfile load on demand (libbz2, liblzma).
    "_bz2", "bz2", "_lzma", "lzma", "tarfile",
    # decimal falls back to _pydecimal; the CJK codecs load only when asked for.
    "_decimal", "_multibytecodec", "_codecs_cn", "_codecs_hk", "_codecs_iso2022",
    "_codecs_jp", "_codecs_kr", "_codecs_tw",
    # Network clients and XML no capture speaks.
    "urllib.request", "http.server", "http.cookiejar", "xmlrpc", "ftplib", "smtplib",
    "imaplib", "poplib", "xml", "pyexpat", "sqlite3", "_sqlite3", "curses", "_curses",
    "readline",
]  # fmt: skip
