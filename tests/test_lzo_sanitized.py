"""The C of our LZO and zstd bindings under AddressSanitizer and UBSan.

decompress() reads page data from dump files, which are hostile input, and
compress_pages() writes into a buffer sized by a worst-case bound. Both are
built here with the sanitizers and driven through every path by
tests/lzo_stress.py: a read or write out of bounds, a use after free or
undefined behaviour ends the run with the sanitizer's report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _runtime(name: str) -> str:
    """The sanitizer runtime gcc links with, as a path LD_PRELOAD takes."""
    found = subprocess.run(
        ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True
    )
    return os.path.realpath(found.stdout.strip())


def test_lzo_and_zstd_bindings_are_clean_under_sanitizers(tmp_path: Path) -> None:
    for name, libraries in (("_lzo", ["-llzo2", "-lz"]), ("_zstd", ["-lzstd"])):
        module = tmp_path / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
        subprocess.run(
            ["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             "-fno-omit-frame-pointer", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
             str(REPO / f"capture/dumpfile/{name}.c"), *libraries, "-o", str(module)],
            check=True,
        )  # fmt: skip
    environment = {
        **os.environ,
        # The sanitizers' runtimes must come first; Python's own allocator
        # would hide heap errors from ASan inside its arenas.
        "LD_PRELOAD": f"{_runtime('libasan.so')}:{_runtime('libubsan.so')}",
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
    }
    run = subprocess.run(
        [sys.executable, str(REPO / "tests/lzo_stress.py"), str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.strip() == "clean"
