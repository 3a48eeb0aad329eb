"""Host-side readers: pull the vmcore off the raw dump disk, inspect its ELF
program headers and count the lab's per-page ASCII patterns.

The pattern counter is what tests use to compare a dump with workload.json.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .util import LabError

DUMP_MAGIC = b"CRASHLAB-DUMPDISK\n"
DONE_MAGIC = b"CRASHLAB-DONE "
DUMP_OFFSET = 1 << 20
PAGE = 4096
PT_LOAD = 1
PT_NOTE = 4


@dataclass(frozen=True)
class Phdr:
    """One ELF64 program header of the vmcore."""

    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


def init_dump_disk(path: Path, size_mb: int) -> None:
    """Create a sparse raw disk whose first sector marks it as the dump target."""
    with path.open("wb") as fh:
        fh.truncate(size_mb << 20)
        fh.write(DUMP_MAGIC)


def read_phdrs(fh_bytes: bytes) -> list[Phdr]:
    """Parse ELF64 little-endian program headers from the start of a vmcore."""
    if fh_bytes[:4] != b"\x7fELF":
        raise LabError("vmcore does not start with an ELF header")
    if fh_bytes[4] != 2:
        raise LabError("vmcore is not ELF64")
    (phoff,) = struct.unpack_from("<Q", fh_bytes, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", fh_bytes, 0x36)
    out = []
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, _flags, off, vaddr, paddr, filesz, memsz, _al = struct.unpack_from(
            "<IIQQQQQQ", fh_bytes, base
        )
        out.append(Phdr(p_type, off, vaddr, paddr, filesz, memsz))
    return out


def phdrs_of(vmcore: Path) -> list[Phdr]:
    """Program headers of a vmcore file on the host."""
    with vmcore.open("rb") as fh:
        head = fh.read(1 << 20)
    return read_phdrs(head)


def extract_vmcore(disk: Path, dest: Path) -> int:
    """Copy the vmcore out of the raw dump disk; returns its size.

    The capture side writes "CRASHLAB-DONE <size>" into sector 1 only after
    the copy finished, so its presence proves a complete dump.
    """
    with disk.open("rb") as src:
        src.seek(512)
        rec = src.read(512)
        if not rec.startswith(DONE_MAGIC):
            raise LabError("dump disk has no CRASHLAB-DONE record: capture did not finish")
        size = int(rec[len(DONE_MAGIC) :].split(b"\n", 1)[0])
        src.seek(DUMP_OFFSET)
        head = src.read(min(size, 1 << 20))
        phdrs = read_phdrs(head)
        end = max(p.offset + p.filesz for p in phdrs)
        if end > size:
            raise LabError(f"vmcore truncated: ELF needs {end} bytes, disk has {size}")
        tmp = dest.with_name(dest.name + ".tmp")
        with tmp.open("wb") as out:
            _copy_range(src.fileno(), out.fileno(), DUMP_OFFSET, size)
        tmp.replace(dest)
    return size


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """Kernel-side copy (copy_file_range), falling back to read/write."""
    done = 0
    while done < count:
        try:
            n = os.copy_file_range(src, dst, count - done, offset + done)
        except OSError:
            n = 0
        if n <= 0:
            os.lseek(src, offset + done, os.SEEK_SET)
            chunk = os.read(src, min(1 << 24, count - done))
            if not chunk:
                raise LabError("short read copying the vmcore")
            n = os.write(dst, chunk)
        done += n


def count_patterns(vmcore: Path) -> dict[str, dict[str, int]]:
    """Count lab-patterned pages per kind in the PT_LOAD segments.

    A page counts when it starts with "CRASHLAB-<KIND>-<8 digits>|".  Returns
    {kind: {"pages": n, "unique": distinct page numbers}}; "pages" can exceed
    "unique" when stale copies of a page linger in free memory.
    """
    pages: Counter[str] = Counter()
    unique: dict[str, set[int]] = {}
    with vmcore.open("rb") as fh:
        for ph in phdrs_of(vmcore):
            if ph.type != PT_LOAD or ph.filesz == 0:
                continue
            # pages are aligned in physical memory, not necessarily in the file
            first = (-ph.paddr) % PAGE
            pos = first
            while pos < ph.filesz:
                n = min(1 << 26, ph.filesz - pos)
                fh.seek(ph.offset + pos)
                buf = fh.read(n)
                _scan(buf, pages, unique)
                pos += n
    return {k: {"pages": pages[k], "unique": len(unique[k])} for k in sorted(pages)}


def _scan(buf: bytes, pages: Counter[str], unique: dict[str, set[int]]) -> None:
    """Check each page start in buf for a lab pattern."""
    find = buf.find
    pos = find(b"CRASHLAB-")
    while pos != -1:
        if pos % PAGE == 0:
            head = buf[pos : pos + 40]
            dash = head.find(b"-", 9)
            bar = head.find(b"|", dash)
            if dash > 0 and bar == dash + 9 and head[dash + 1 : bar].isdigit():
                kind = head[9:dash].decode()
                pages[kind] += 1
                unique.setdefault(kind, set()).add(int(head[dash + 1 : bar]))
        pos = find(b"CRASHLAB-", (pos // PAGE + 1) * PAGE)


KIND_OF_CONTENT = {
    "anon": "ANON",
    "page_cache": "CACHE",
    "shmem": "SHM",
    "hugetlb": "HUGE",
    "hwpoison": "HWPOISON",
}


def check_dump(out_dir: Path) -> dict[str, object]:
    """Compare a dump's pattern pages with its workload.json.

    Returns {"ok": bool, "kinds": {kind: {"expected", "found_unique",
    "found_pages"}}, "panic_comm_found": bool}.  A kind is fine when every
    expected page number is present (unique count equal to expected).
    """
    import json  # local: only this helper needs it

    info = json.loads((out_dir / "workload.json").read_text())
    counts = count_patterns(out_dir / "vmcore")
    kinds: dict[str, dict[str, int]] = {}
    ok = True
    for name, tag in KIND_OF_CONTENT.items():
        expected = int(info["contents"][name]["pages"])
        found = counts.get(tag, {"pages": 0, "unique": 0})
        kinds[name] = {
            "expected": expected,
            "found_unique": found["unique"],
            "found_pages": found["pages"],
        }
        ok = ok and found["unique"] == expected
    # task_struct.comm is 16 NUL-padded bytes; a heuristic, not a task walk
    comm = str(info.get("panic_comm", "crashlab-panic")).encode().ljust(16, b"\0")
    comm_found = _contains(out_dir / "vmcore", comm)
    return {"ok": ok and comm_found, "kinds": kinds, "panic_comm_found": comm_found}


def _contains(path: Path, needle: bytes) -> bool:
    """Whether the file contains needle (chunked, overlapping by len(needle))."""
    with path.open("rb") as fh:
        tail = b""
        while chunk := fh.read(1 << 26):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False
