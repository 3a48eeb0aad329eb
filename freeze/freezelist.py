"""What the frozen agent leaves out, and what only an ssh target needs.

Read by agent.spec (the freeze) and scripts/build-agent (ssh.files). Each
exclusion is something no capture imports but something else in the tree
would pull in; the sizes are what leaving it out saved, measured on the
stripped tree (scripts/build-agent --measure-excludes).
"""

SSH_PACKAGES = ("paramiko", "cryptography", "nacl", "bcrypt", "cffi")
"""Pure-Python packages an ssh target loads, collected as files so the image
can leave them out (with their .so files and dist-info)."""

SSH_DISTRIBUTIONS = ("paramiko", "cryptography", "pynacl", "bcrypt", "cffi")
"""Their distributions, whose *.dist-info PyInstaller copies (paramiko reads its version)."""

SSH_EXTENSIONS = ("_cffi_backend",)
"""Top-level extension modules only the ssh packages load (nacl, bcrypt)."""

EXCLUDES = [
    # Development and test suites some stdlib module names
    "tkinter", "_tkinter", "unittest", "doctest", "pydoc", "pydoc_data", "ensurepip",
    "lib2to3", "distutils", "setuptools", "pkg_resources", "pip", "test", "idlelib",
    "pytest", "_pytest", "hypothesis", "pyfakefs", "mypy", "drgn", "elftools", "lz4",
    # paramiko treats invoke as optional (only ssh_config's Match exec); it pulls
    # unittest.mock and asyncio into every import of paramiko.
    "invoke",
    # zstandard's cffi backend duplicates the C one and would pull cffi into the core.
    "zstandard.backend_cffi",
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
