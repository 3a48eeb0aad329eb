"""Page classification on synthetic struct pages: corrupt and unusual input."""

from __future__ import annotations

from pathlib import Path

from capture.filter import DumpLevel, filter_pages
from capture.vmcore import Vmcore
from tests.vmcore_builder import StructPage, VmcoreBuilder

BUDDY = -129
OFFLINE = -257


def build(tmp_path: Path, builder: VmcoreBuilder) -> str:
    path = tmp_path / "vmcore"
    builder.write(path)
    return str(path)


def test_unreadable_struct_pages_keep_their_pages(tmp_path: Path) -> None:
    builder = VmcoreBuilder(vmemmap_page="4K")
    for pfn in (2000, 2001, 3000, 3001):
        builder.set_page(pfn, StructPage(mapcount=BUDDY))
    builder.build()
    builder.unmap(builder.struct_page_addr(2000) or 0)  # struct pages of pfns 1984-2047 are lost
    builder.build()
    with Vmcore(build(tmp_path, builder)) as vmcore:
        result = filter_pages(vmcore, DumpLevel(31))
    bitmap2 = result.bitmap2
    assert bitmap2.is_set(2000) and bitmap2.is_set(2001)
    assert not bitmap2.is_set(3000) and not bitmap2.is_set(3001)
    assert result.stats.free == 2


def test_garbage_buddy_order_keeps_the_page(tmp_path: Path) -> None:
    builder = VmcoreBuilder()
    builder.set_page(4096, StructPage(mapcount=BUDDY, private=200))
    builder.set_page(8192, StructPage(mapcount=BUDDY, private=3))
    with Vmcore(build(tmp_path, builder)) as vmcore:
        result = filter_pages(vmcore, DumpLevel.FREE)
    assert result.bitmap2.is_set(4096)
    assert not any(result.bitmap2.is_set(pfn) for pfn in range(8192, 8200))
    assert result.bitmap2.is_set(8200)
    assert result.stats.free == 8


def test_offline_and_hwpoison_go_at_every_level(tmp_path: Path) -> None:
    builder = VmcoreBuilder()
    builder.set_page(5000, StructPage(mapcount=OFFLINE))
    builder.set_page(5001, StructPage(flags=1 << 23))  # PG_hwpoison
    with Vmcore(build(tmp_path, builder)) as vmcore:
        result = filter_pages(vmcore, DumpLevel(0))
    assert not result.bitmap2.is_set(5000) and not result.bitmap2.is_set(5001)
    assert (result.stats.offline, result.stats.hwpoison) == (1, 1)


def test_compound_page_excluded_whole(tmp_path: Path) -> None:
    """A 2 MiB anonymous THP: the head decides for all 512 pages (6.1 layout)."""
    builder = VmcoreBuilder()
    head = 6144
    builder.set_page(head, StructPage(flags=1 << 16, mapping=0xFFFF888000100001))
    # First tail: compound_head with bit 0 set; its compound_order byte is at offset 17.
    builder.set_page(head + 1, StructPage(compound_head=0xFFFFEA0000000001))
    builder.build()
    address = builder.virt_to_phys((builder.vmemmap or 0) + (head + 1) * 64 + 17)
    assert address is not None
    builder.write_phys(address, bytes([9]))  # order 9
    builder.build()
    with Vmcore(build(tmp_path, builder)) as vmcore:
        result = filter_pages(vmcore, DumpLevel.USER)
    assert result.stats.user == 512
    assert not any(result.bitmap2.is_set(pfn) for pfn in range(head, head + 512))
    assert result.bitmap2.is_set(head + 512)


def test_hugetlbfs_pages_go_with_user_data(tmp_path: Path) -> None:
    """A file-backed (not anonymous) compound page is user data only if its
    first tail says HUGETLB_PAGE_DTOR (6.1 layout: byte 16 of the tail), and
    only if makedumpfile could read that tail: not across a 512-page chunk."""
    builder = VmcoreBuilder()
    heads = {6144: (2, 9), 8192: (1, 9), 10751: (2, 0)}  # pfn: (dtor, order)
    for head in heads:
        builder.set_page(head, StructPage(flags=1 << 16, mapping=0xFFFF888000200000))
        builder.set_page(head + 1, StructPage(compound_head=0xFFFFEA0000000001))
    builder.build()
    for head, (dtor, order) in heads.items():
        address = builder.virt_to_phys((builder.vmemmap or 0) + (head + 1) * 64 + 16)
        assert address is not None
        builder.write_phys(address, bytes([dtor, order]))
    builder.build()
    with Vmcore(build(tmp_path, builder)) as vmcore:
        result = filter_pages(vmcore, DumpLevel.USER)
    assert result.stats.user == 512
    assert not any(result.bitmap2.is_set(pfn) for pfn in range(6144, 6144 + 512))
    assert result.bitmap2.is_set(8192) and result.bitmap2.is_set(10751)
