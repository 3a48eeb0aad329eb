"""Self-test of tests/vmcore_builder.py.

Everything here re-reads the built image with code written independently of
the builder (struct-level ELF parsing, a page-table walk, the spec's log
walks), plus binutils' readelf and, if installed, pyelftools.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.vmcore_builder import LogRecord, StructPage, VmcoreBuilder

SMALL_RAM = [(0x1000, 0x9F000), (0x100000, 32 << 20)]
ID_MASK = (1 << 62) - 1


def small(**kw: Any) -> VmcoreBuilder:
    """A builder over 32 MiB of RAM with a 2 MiB kernel image: fast to build."""
    return VmcoreBuilder(ram=SMALL_RAM, kernel_size=0x200000, **kw)


@dataclass
class Core:
    image: bytes
    loads: list[tuple[int, int, int, int]]  # (offset, vaddr, paddr, filesz)
    notes: list[tuple[bytes, int, bytes]]  # (name, type, desc)
    info: dict[str, str]

    def phys(self, pa: int, n: int) -> bytes | None:
        for off, _, paddr, size in self.loads:
            if paddr <= pa and pa + n <= paddr + size:
                return self.image[off + pa - paddr:off + pa - paddr + n]
        return None

    def u64(self, pa: int) -> int:
        data = self.phys(pa, 8)
        assert data is not None, hex(pa)
        return int.from_bytes(data, "little")

    def num(self, key: str) -> int:
        return int(self.info[key], 0)

    def sym(self, name: str) -> int:
        return int(self.info[f"SYMBOL({name})"], 16)

    def walk(self, va: int) -> int | None:
        """Independent x86_64 page-table walk (docs/formats.md §"Page-table walk")."""
        phys_base = self.num("NUMBER(phys_base)")
        table = self.sym("init_top_pgt") - 0xFFFFFFFF80000000 + phys_base
        mask = 0x000FFFFFFFFFF000 & ~self.num("NUMBER(sme_mask)")
        l5 = self.num("NUMBER(pgtable_l5_enabled)")
        shifts = [48, 39, 30, 21, 12] if l5 else [39, 30, 21, 12]
        for shift in shifts:
            entry = self.u64(table + ((va >> shift) & 511) * 8)
            if not entry & 1:
                return None
            if shift == 12 or (shift in (21, 30) and entry & 0x80):
                size = 1 << shift
                return (entry & mask & ~(size - 1)) | (va & (size - 1))
            table = entry & mask
        raise AssertionError("unreachable")

    def read_va(self, va: int, n: int) -> bytes:
        pa = self.walk(va)
        assert pa is not None, hex(va)
        data = self.phys(pa, n)
        assert data is not None, hex(pa)
        return data


def parse(image: bytes) -> Core:
    assert image[:4] == b"\x7fELF" and image[4:6] == b"\x02\x01"
    e_type, e_machine = struct.unpack_from("<HH", image, 16)
    assert (e_type, e_machine) == (4, 62)
    phoff, = struct.unpack_from("<Q", image, 32)
    phnum, = struct.unpack_from("<H", image, 56)
    loads, notes = [], []
    for i in range(phnum):
        ptype, _, off, vaddr, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", image, phoff + 56 * i)
        if ptype == 1:
            assert filesz == memsz
            loads.append((off, vaddr, paddr, filesz))
        elif ptype == 4:
            notes = parse_notes(image[off:off + filesz])
    info: dict[str, str] = {}
    for name, _, desc in notes:
        if name == b"VMCOREINFO":
            for line in desc.decode(errors="replace").splitlines():
                key, _, value = line.partition("=")
                info.setdefault(key, value)
    return Core(image, loads, notes, info)


def parse_notes(blob: bytes) -> list[tuple[bytes, int, bytes]]:
    out, pos = [], 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        if namesz == 0:
            break
        pos += 12
        name = blob[pos:pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        out.append((name, ntype, blob[pos:pos + descsz]))
        pos += (descsz + 3) & ~3
    return out


# ------------------------------------------------------------------ ELF level


def test_elf_layout_and_notes() -> None:
    b = small(cpus=3)
    core = parse(b.build())
    assert [n[:2] for n in core.notes] == [(b"CORE", 1)] * 3 + [(b"VMCOREINFO", 0)]
    assert [struct.unpack_from("<i", d, 32)[0] for _, _, d in core.notes[:3]] == [1, 2, 3]
    assert all(len(d) == 336 for _, _, d in core.notes[:3])
    assert [(v, p, s) for _, v, p, s in core.loads] == [
        (b.symbols["_text"], b.kernel_paddr, b.kernel_size),
        (b.page_offset + 0x1000, 0x1000, 0x9E000),
        (b.page_offset + 0x100000, 0x100000, (32 << 20) - 0x100000)]
    assert all((off - p) % 4096 == 0 for off, _, p, _ in core.loads)
    assert core.info["OSRELEASE"] == "6.1.0-test"
    assert core.num("NUMBER(phys_base)") == b.phys_base == 0x1000000 - 0x15000000
    assert core.info["KERNELOFFSET"] == "14000000"
    assert core.info["CRASHTIME"] == "1700000000"


def test_readelf_agrees(tmp_path: Path) -> None:
    if shutil.which("readelf") is None:
        pytest.skip("readelf not installed")
    b = small()
    b.write_phys(0x123456, b"MARKER-IN-RAM")
    path = tmp_path / "vmcore"
    b.write(path)
    out = subprocess.run(["readelf", "-lnW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "CORE (Core file)" in out
    assert out.count("NT_PRSTATUS") == 2 and "VMCOREINFO" in out
    rows = re.findall(r"^\s+LOAD\s+(0x\w+) (0x\w+) (0x\w+) (0x\w+) (0x\w+)", out, re.M)
    assert len(rows) == 3
    image = path.read_bytes()
    for off, vaddr, paddr, filesz, memsz in ((int(x, 16) for x in r) for r in rows):
        assert filesz == memsz and off + filesz <= len(image)
        if paddr <= 0x123456 < paddr + filesz:
            pos = off + 0x123456 - paddr
            assert image[pos:pos + 13] == b"MARKER-IN-RAM"
        if vaddr == b.symbols["_text"]:
            pos = off + b.symbols["init_uts_ns"] - vaddr
            assert image[pos:pos + 6] == b"Linux\0"
            assert image[pos + 2 * 65:pos + 2 * 65 + 10] == b"6.1.0-test"


def test_pyelftools_agrees() -> None:
    elffile = pytest.importorskip("elftools.elf.elffile")
    b = small()
    elf = elffile.ELFFile(io.BytesIO(b.build()))
    assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
    segs = list(elf.iter_segments())
    assert segs[0]["p_type"] == "PT_NOTE"
    names = [n["n_name"] for n in segs[0].iter_notes()]
    assert names == ["CORE", "CORE", "VMCOREINFO"]
    kernel = segs[1]
    uts_off = b.symbols["init_uts_ns"] - kernel["p_vaddr"]
    assert kernel.data()[uts_off:uts_off + 5] == b"Linux"


# ---------------------------------------------------------------- page tables


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("direct", ["4K", "2M", "1G"])
@pytest.mark.parametrize("vmemmap", ["4K", "2M", "1G"])
def test_page_table_walk(levels: int, direct: str, vmemmap: str) -> None:
    sme = 1 << 47
    b = small(levels=levels, direct_map_page=direct, vmemmap_page=vmemmap,
                      sme_mask=sme)
    b.set_page(0x1234, StructPage(flags=0x55, mapping=0xABC, mapcount=-129, refcount=3))
    core = parse(b.build())
    assert core.num("NUMBER(pgtable_l5_enabled)") == (levels == 5)
    assert core.num("NUMBER(sme_mask)") == sme
    top = b.symbols["init_top_pgt"] - 0xFFFFFFFF80000000 + b.phys_base
    assert b.top_table_paddr == top
    assert any(core.u64(top + 8 * i) & sme for i in range(512))  # C-bit really set
    assert b.vmemmap is not None
    samples = [b.page_offset + 0x1000, b.page_offset + 0x101234, b.page_offset + (32 << 20) - 8,
               b.symbols["_text"], b.symbols["init_uts_ns"], b.symbols["_end"] - 1,
               b.vmemmap, b.vmemmap + 0x1234 * 64 + 48, b.vmemmap + (b.max_pfn * 64) - 1]
    for va in samples:
        assert core.walk(va) == b.virt_to_phys(va) is not None, hex(va)
    assert core.walk(b.page_offset + 0x5000) == 0x5000
    assert core.walk(b.symbols["init_uts_ns"]) == (
        b.symbols["init_uts_ns"] - 0xFFFFFFFF80000000 + b.phys_base)
    assert core.walk(0xFFFFC90000000000) is None is b.virt_to_phys(0xFFFFC90000000000)
    flags, = struct.unpack("<Q", core.read_va(b.vmemmap + 0x1234 * 64, 8))
    mapcount, refcount = struct.unpack("<iI", core.read_va(b.vmemmap + 0x1234 * 64 + 48, 8))
    assert (flags, mapcount, refcount) == (0x55, -129, 3)


def test_5level_defaults() -> None:
    b = small(levels=5)
    core = parse(b.build())
    assert b.page_offset == 0xFF11000000000000
    assert core.num("NUMBER(MAX_PHYSMEM_BITS)") == 52
    assert core.num("LENGTH(mem_section)") == 2 ** (52 - 27) // 128


def test_unmap_makes_hole() -> None:
    b = small(direct_map_page="4K")
    va = b.page_offset + 0x200000
    b.unmap(va)
    core = parse(b.build())
    assert core.walk(va) is None and b.virt_to_phys(va) is None
    assert core.walk(va + 0x1000) == 0x201000


# ----------------------------------------------------------------- memmap


def decode_sparse(core: Core, pfn: int) -> int | None:
    """The sparse walk of docs/formats.md §"Finding struct pages", for one pfn."""
    shift = core.num("NUMBER(SECTION_SIZE_BITS)") - 12
    per_root = 4096 // core.num("SIZE(mem_section)")
    nr = pfn >> shift
    root = core.u64(core.walk(core.sym("mem_section") + (nr // per_root) * 8) or 0)
    if root == 0:
        return None
    smm = core.u64(core.walk(root + (nr % per_root) * 32) or 0)
    if not smm & 1:
        return None
    return (smm & ~0x3F) + pfn * 64


@pytest.mark.parametrize("model", ["sparsemem_vmemmap", "sparsemem", "flatmem"])
def test_memory_models(model: str) -> None:
    ram = [(0x1000, 0x9F000), (0x100000, 40 << 20), (300 << 20, 301 << 20)]  # hole: section 1
    b = VmcoreBuilder(ram=ram, kernel_size=0x200000, memory_model=model, section_flags=0x3F)
    pfn = (300 << 20) // 4096 + 7
    b.set_page(pfn, StructPage(flags=1 << 4, private=9, mapcount=-257))
    core = parse(b.build())
    if model == "flatmem":
        assert "SYMBOL(mem_section)" not in core.info
        mem_map = core.u64(core.walk(core.sym("mem_map")) or 0)
        addr = mem_map + pfn * 64
    else:
        assert "SYMBOL(mem_map)" not in core.info
        decoded = decode_sparse(core, pfn)
        assert decoded is not None
        addr = decoded
        assert decode_sparse(core, (200 << 20) // 4096) is None  # section 1 has no RAM
    assert addr == b.struct_page_addr(pfn)
    private, = struct.unpack("<Q", core.read_va(addr + 40, 8))
    assert private == 9 and core.read_va(addr + 48, 4) == struct.pack("<i", -257)
    default = b.struct_page_addr(0x200)
    assert default is not None and core.read_va(default + 48, 4) == b"\xff" * 4
    if model == "sparsemem_vmemmap":
        assert decode_sparse(core, 0) == b.vmemmap  # the coded value is vmemmap_base


# ------------------------------------------------------------------- logs


def records(n: int) -> list[LogRecord]:
    return [LogRecord(b"message %d " % i + b"x" * (i % 13), 1_000_000 * i + 17,
                      caller_id=(0x80000000 | (i % 4)) if i % 2 else 100 + i)
            for i in range(n)]


def read_lockless(core: Core) -> list[tuple[bytes, int, int]]:
    """docs/formats.md §"Lockless ring", tail to head inclusive."""
    prb = core.u64(core.walk(core.sym("prb")) or 0)
    ring = core.read_va(prb, 88)
    count_bits, descs, infos, head_id, tail_id = struct.unpack_from("<I4xQQQQ", ring, 0)
    size_bits, data = struct.unpack_from("<I4xQ", ring, 48)
    count, size = 1 << count_bits, 1 << size_bits
    out, rid = [], tail_id
    while True:
        state_var, begin, nxt = struct.unpack("<QQQ", core.read_va(descs + rid % count * 24, 24))
        ts, text_len, caller = struct.unpack(
            "<8xQH2xI", core.read_va(infos + rid % count * 88, 24))
        begin, nxt = begin % size, nxt % size
        if state_var & ID_MASK == rid and state_var >> 62 in (1, 2) and begin != nxt:
            begin = 0 if begin > nxt else begin
            assert struct.unpack("<Q", core.read_va(data + begin, 8))[0] == rid
            text_len = min(text_len, nxt - begin - 8)
            out.append((core.read_va(data + begin + 8, text_len), ts, caller))
        if rid == head_id:
            return out
        rid = (rid + 1) & ID_MASK


def test_lockless_wraps() -> None:
    b = small(prb_count_bits=3, prb_size_bits=8)
    recs = records(30)
    b.add_log(recs)
    core = parse(b.build())
    got = read_lockless(core)
    assert got == [(r.text, r.ts_nsec, r.caller_id) for r in b.expected_log]
    assert 0 < len(got) <= 8 and b.expected_log == recs[-len(got):]
    prb = core.u64(core.walk(core.sym("prb")) or 0)
    descs = struct.unpack("<Q", core.read_va(prb + 8, 8))[0]
    lpos = [struct.unpack("<QQ", core.read_va(descs + i * 24 + 8, 16)) for i in range(8)]
    assert any(bg % 256 > nx % 256 for bg, nx in lpos)  # at least one wrapped block


def test_lockless_ids_wrap_through_zero() -> None:
    b = small(prb_count_bits=3, prb_size_bits=10)
    b.add_log(records(10))  # ids start at -8 & ID_MASK, like a freshly booted kernel
    core = parse(b.build())
    prb = core.u64(core.walk(core.sym("prb")) or 0)
    head_id, tail_id = struct.unpack("<QQ", core.read_va(prb + 24, 16))
    assert (head_id, tail_id) == (1, ID_MASK - 5)
    assert [g[0] for g in read_lockless(core)] == [r.text for r in records(10)[2:]]


def test_lockless_not_full_and_states() -> None:
    b = small(prb_initial_id=0)
    recs = [*records(3), LogRecord(b"", 5), LogRecord(b"reserved", 6, state=0)]
    b.add_log(recs)
    got = read_lockless(parse(b.build()))
    assert [g[0] for g in got] == [r.text for r in recs[:3]]
    assert b.expected_log == recs[:4]  # the empty-text record is kept, just prints nothing


def read_legacy(core: Core) -> list[tuple[bytes, int, int]]:
    """docs/formats.md §"Variable-length records", with the loop guard."""
    buf = core.u64(core.walk(core.sym("log_buf")) or 0)
    blen, = struct.unpack("<i", core.read_va(core.sym("log_buf_len"), 4))
    first, = struct.unpack("<I", core.read_va(core.sym("log_first_idx"), 4))
    nxt, = struct.unpack("<I", core.read_va(core.sym("log_next_idx"), 4))
    ring = core.read_va(buf, blen)
    hdr, caller_off = core.num("SIZE(printk_log)"), core.num("OFFSET(printk_log.caller_id)")
    out, idx, seen = [], first, set()
    while idx != nxt:
        if idx in seen:
            raise RuntimeError("log loop")
        seen.add(idx)
        ts, length, text_len = struct.unpack_from("<QHH", ring, idx)
        if length == 0:
            idx = 0
            continue
        caller, = struct.unpack_from("<I", ring, idx + caller_off)
        out.append((ring[idx + hdr:idx + hdr + text_len], ts, caller))
        idx += length
    return out


def test_legacy_wraps_and_loops() -> None:
    b = small(log="legacy", log_buf_len=512)
    recs = records(40)
    b.add_log(recs)
    core = parse(b.build())
    got = read_legacy(core)
    assert got == [(r.text, r.ts_nsec, r.caller_id) for r in b.expected_log]
    assert 0 < len(got) < 40 and b.expected_log == recs[-len(got):]
    assert "SYMBOL(prb)" not in core.info
    b.make_log_loop()
    with pytest.raises(RuntimeError, match="loop"):
        read_legacy(parse(b.build()))


def test_plain_log() -> None:
    b = small(log="plain", log_buf_len=256)
    b.add_log(records(20))
    core = parse(b.build())
    buf = core.u64(core.walk(core.sym("log_buf")) or 0)
    end, = struct.unpack("<I", core.read_va(core.sym("log_end"), 4))
    ring = core.read_va(buf, 256)
    assert end > 256
    text = bytes(ring[i % 256] for i in range(end - 256, end))
    assert text == b.expected_plain_log and text.endswith(b"] message 19 " + b"x" * 6 + b"\n")


def test_no_log() -> None:
    core = parse(small(log="none").build())
    assert not any(k in core.info for k in ("SYMBOL(prb)", "SYMBOL(log_buf)"))


# ------------------------------------------------------ vmcoreinfo & corruption


def test_vmcoreinfo_overrides_and_extra() -> None:
    b = small()
    b.vmcoreinfo_overrides.update({"PAGESIZE": "8192", "CRASHTIME": None, "NEW(key)": "1"})
    b.vmcoreinfo_extra += ["OSRELEASE=second", "garbage without equals"]
    lines = b.vmcoreinfo_lines()
    assert "PAGESIZE=8192" in lines and not any(ln.startswith("CRASHTIME") for ln in lines)
    assert lines[-2:] == ["OSRELEASE=second", "garbage without equals"]
    core = parse(b.build())
    assert core.info["OSRELEASE"] == "6.1.0-test" and core.info["NEW(key)"] == "1"


def test_garble_truncate_and_bad_prb() -> None:
    b = small()
    b.garble_vmcoreinfo()
    b.point_prb_outside_memory()
    image = b.build()
    note = parse_notes(image[4096:8192])[-1]
    assert note[0] == b"VMCOREINFO" and b"=" not in note[2]
    b.vmcoreinfo_overrides.clear()
    prb = b.symbols["prb"]
    raw = Core(image, parse(image).loads, [], {})
    target = raw.u64(prb - 0xFFFFFFFF80000000 + b.phys_base)
    assert raw.phys(target - b.page_offset, 8) is None  # points at no PT_LOAD
    assert b.truncate(5000) == image[:5000] and b.image == image[:5000]


def test_build_is_repeatable_and_poke() -> None:
    b = small()
    first = b.build()
    assert b.build() == first
    b.write_phys(b.top_table_paddr, bytes(4096))  # wipe the top page table
    core = parse(b.build())
    assert core.walk(b.page_offset) is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        VmcoreBuilder(kernel_paddr=1 << 40)
    with pytest.raises(ValueError):
        VmcoreBuilder(levels=3)
    with pytest.raises(ValueError, match="congruent"):
        small(vmemmap_page="1G", vmemmap_base=0xFFFFEA0000000000).build()


def test_release_defaults_and_old_uts_layout() -> None:
    assert small(log="legacy").release.startswith("5.4")
    assert small(log="plain").release.startswith("2.6")
    b = small(uts_name_offset=None, release="4.19.0-x")
    core = parse(b.build())
    assert "OFFSET(uts_namespace.name)" not in core.info
    assert core.read_va(core.sym("init_uts_ns") + 4 + 2 * 65, 8) == b"4.19.0-x"


@pytest.mark.parametrize("model", ["sparsemem_vmemmap", "sparsemem", "flatmem"])
def test_write_sparse_matches_build(tmp_path: Path, model: str) -> None:
    """write_sparse() writes build()'s bytes; fills skip the builder's own pages."""
    b = small(memory_model=model)
    b.fill_pages(range(0, 8192, 16), b"\x5a" * 4096)
    b.set_page(64, StructPage(mapcount=-129, private=3))
    b.write_phys(0x123456, b"MARKER-IN-RAM")
    path = tmp_path / "vmcore"
    assert b.write_sparse(path) == path.stat().st_size
    image = b.build()
    assert path.read_bytes() == image
    core = parse(image)
    assert core.phys(7008 * 4096, 4096) == b"\x5a" * 4096  # a filled page
    # The builder's own pages were not filled over: tables still walk, uts reads.
    assert core.read_va(core.sym("init_uts_ns"), 6) == b"Linux\0"


def test_write_sparse_clones_repeated_pages_on_xfs(tmp_path: Path) -> None:
    """On a filesystem that shares blocks (XFS with reflink, on a loop device),
    a page repeated from one buffer takes its disk once and the rest are
    clones; pages written over a shared run (a buddy struct page, a page of
    zeros in the mem_map) still win: the file is build()'s bytes."""
    ram = [(0x1000, 0x9F000), (0x100000, 32 << 20), (64 << 20, 192 << 20)]
    b = VmcoreBuilder(ram=ram, kernel_size=0x200000)
    data = bytes(range(256)) + bytes(4096 - 256)
    b.fill_pages(range(0, 0xC000, 16), data)
    b.vmcoreinfo_lines()  # lays out the mem_map
    b.set_page(0x8000, StructPage(mapcount=-129, private=3))
    b.write_phys(b.virt_to_phys(b.struct_page_addr(0x9000) or 0) or 0, bytes(4096))
    image, mountpoint = tmp_path / "xfs.img", tmp_path / "mnt"
    mountpoint.mkdir()
    with image.open("wb") as file:
        file.truncate(512 << 20)  # XFS's smallest is 300 MiB
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        before = shutil.disk_usage(mountpoint).used
        path = mountpoint / "vmcore"
        b.write_sparse(path)
        subprocess.run(["sync", "-f", str(path)], check=True)
        used = shutil.disk_usage(mountpoint).used - before
        assert path.read_bytes() == b.build()
        listed = path.stat().st_blocks * 512  # counts a shared block once per use
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    filled = len(range(0, 0xC000, 16)) * 4096  # 12 MiB, minus the builder's own pages
    assert listed > filled / 2  # the pages are there, as far as the file says
    assert used < listed - filled / 2  # ... but most of them are shared blocks


# --------------------------------------------------------------- big machines

GIB = 1 << 30


def pc_ram(gb: int) -> list[tuple[int, int]]:
    """scripts/bench-memory's layout: RAM below 2 GiB, the rest above 4 GiB."""
    return [(0x1000, 0x9F000), (0x100000, 2 * GIB), (4 * GIB, (gb + 2) * GIB)]


class BuilderCore:
    """capture's CoreFile over the builder's sparse memory: the machine's
    file is never written, so a 1 TiB layout is read in a second."""

    machine = "EM_X86_64"
    note_phdr = (0, 4)

    def __init__(self, b: VmcoreBuilder) -> None:
        from capture.vmcore.elfcore import LoadSegment

        self.mem = b._assemble()
        self.size, _, placed = b._file_layout()
        self.path = "<builder>"
        self.notes = b._notes()
        self.segments = [LoadSegment(paddr, vaddr, off + paddr - region, n, n)
                         for (vaddr, paddr, n), (off, region, _) in zip(b._loads(), placed,
                                                                         strict=True)]

    def has_phys(self, paddr: int, size: int = 1) -> bool:
        return any(s.paddr <= paddr and paddr + size <= s.end for s in self.segments)

    def read_phys(self, paddr: int, size: int) -> bytes:
        assert self.has_phys(paddr, size), hex(paddr)
        return self.mem.read(paddr, size)

    def read_header(self, size: int) -> bytes:
        raise NotImplementedError

    def file_span(self, paddr: int, size: int) -> None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.parametrize("gb", [64, 256, 1024])
def test_big_pc_layout(gb: int) -> None:
    """A 64 GiB to 1 TiB PC: the mem_map (1/64 of RAM) and page tables go in
    the range above 4 GiB; capture's Vmcore and MemMap find every struct page
    where the builder put it, through its page tables, and an independent
    walk agrees. Only the layout is built: no file is written."""
    from capture.vmcore import MemMap, Vmcore

    b = VmcoreBuilder(ram=pc_ram(gb))
    top = b.max_pfn - 1
    marked = {top: StructPage(mapcount=-129, private=10),
              (4 * GIB) // 4096 + 1024: StructPage(flags=1 << 4, refcount=2),
              0x80000 - 1: StructPage(mapping=0x1001)}  # last pfn below 2 GiB
    for pfn, page in marked.items():
        b.set_page(pfn, page)
    core = BuilderCore(b)
    start, end = b.reserved
    assert 4 * GIB <= start < end <= (gb + 2) * GIB
    assert end - start >= b.max_pfn * 64  # the whole vmemmap backing is in it
    with Vmcore("<builder>", core=core) as vmcore:  # type: ignore[arg-type]
        assert vmcore.utsname.release == "6.1.0-test"
        memmap = MemMap(vmcore)
        assert memmap.model == "sparsemem_vmemmap" and memmap.vmemmap == b.vmemmap
        pfns = [1, 0x100, 0x80000 - 1, (4 * GIB) // 4096, *marked, top]
        for pfn in pfns:
            assert memmap.page_address(pfn) == b.struct_page_addr(pfn), hex(pfn)
            va = b.struct_page_addr(pfn)
            assert va is not None and vmcore.translator.translate(va) == b.virt_to_phys(va)
        for pfn, page in marked.items():
            cols = next(memmap.columns(pfn, pfn + 1))
            assert cols.raw == page.pack(), hex(pfn)
        assert next(memmap.columns(top - 1, top)).raw == StructPage().pack()
        last_byte = b.page_offset + (gb + 2) * GIB - 1
        assert vmcore.translator.translate(last_byte) == (gb + 2) * GIB - 1
    # An independent walk of the same tables, from the builder's memory.
    walker = Core(b"", [], [], dict(ln.split("=", 1) for ln in b.vmcoreinfo_lines()))
    walker.u64 = lambda pa: core.mem.read_u64(pa)  # type: ignore[method-assign]
    for va in (last_byte, b.vmemmap + top * 64, b.symbols["init_uts_ns"]):
        assert walker.walk(va) == b.virt_to_phys(va) is not None, hex(va)
    assert walker.walk(b.vmemmap + b.max_pfn * 64 + (2 << 20)) is None  # beyond the vmemmap


def test_write_sparse_streams_runs_and_holes(tmp_path: Path) -> None:
    """A machine whose largest RAM range is not the kernel's: the reserved area
    moves there, write_sparse() still writes build()'s bytes, the mem_map is a
    run of one shared page (not a page each), pages of zeros are holes, and a
    page of zeros written over the mem_map still reads as zeros."""
    ram = [(0x1000, 0x9F000), (0x100000, 32 << 20), (64 << 20, 192 << 20)]
    b = VmcoreBuilder(ram=ram, kernel_size=0x200000)
    b.fill_pages(range(0x9000, 0x9100), bytes(4096))  # zeros: must stay holes
    b.fill_pages(range(0x9100, 0x9200), b"\x33" * 4096)
    core0 = BuilderCore(b)
    assert b.reserved[0] == 64 << 20
    assert len(core0.mem.runs) == 1 and core0.mem.runs[0][1] - core0.mem.runs[0][0] >= 192
    memmap_page = b.virt_to_phys(b.struct_page_addr(0x8000) or 0)
    assert memmap_page is not None
    b.write_phys(memmap_page, bytes(4096))  # zeros inside the shared run
    path = tmp_path / "vmcore"
    b.write_sparse(path)
    image = b.build()
    assert path.read_bytes() == image
    core = parse(image)
    assert core.phys(memmap_page, 4096) == bytes(4096)
    assert core.phys(0x9100 * 4096, 4096) == b"\x33" * 4096
    assert core.read_va(b.struct_page_addr(0x8000 + 64) or 0, 64) == StructPage().pack()
    # Disk: the filled data, the mem_map and the builder's few pages, no zeros.
    mem_map = b.max_pfn * 64
    disk = path.stat().st_blocks * 512
    assert 256 * 4096 + mem_map - 4096 <= disk <= 256 * 4096 + mem_map + (1 << 20)
