"""The crashed kernel's log (what ``dmesg`` would have printed).

Three ring layouts, chosen by which symbols VMCOREINFO exports
(docs/formats.md §"Which ring"):

* the lockless ring, ``SYMBOL(prb)`` (Linux 5.10+, commit 896fbe20b4e2
  "printk: use the lockless ringbuffer");
* variable-length records in ``log_buf`` (Linux 3.5 to 5.9, commit
  7ff9554bb578 "printk: convert byte-buffer to variable-length record buffer");
* a plain character ring, ``SYMBOL(log_end)`` (before 3.5).

Reading never gives up on the first bad record: what was read before a
corruption is kept in :attr:`KernelLog.records` and the corruption is reported
in :attr:`KernelLog.error`, so the operator still gets the log's head.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from capture.errors import CaptureError, CorruptError, NoDataError
from capture.vmcore.kernel import Vmcore
from capture.vmcore.vmcoreinfo import VmcoreInfo

__all__ = ("KernelLog", "LogRecord", "format_log", "read_kernel_log")

_ID_MASK = (1 << 62) - 1
"""Descriptor ids are unsigned longs whose top two bits hold the state."""
_DESC_COMMITTED, _DESC_FINALIZED = 1, 2
_MAX_RING_BYTES = 1 << 30
"""Larger rings than log_buf_len=1G do not exist; a bigger size is corruption."""
_CALLER_IS_CPU = 0x80000000
_CALLER_WIDTH = 8
"""makedumpfile's PID_CHARS_DEFAULT: the caller id column is 8 wide."""


class LogRecord(NamedTuple):
    """One printk record."""

    ts_nsec: int
    text: bytes
    caller_id: int | None = None
    """``T<pid>`` or, with bit 31 set, ``C<cpu>``; None when the kernel has none."""


class KernelLog:
    """The log as read: records, or plain text for rings before Linux 3.5."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.plain_text: bytes | None = None
        self.error: CaptureError | None = None
        """Why reading stopped early; what was read before it is still here."""


def read_kernel_log(vmcore: Vmcore) -> KernelLog:
    """Read the kernel log from whichever ring the kernel used.

    :raises CorruptError: if VMCOREINFO names no log buffer at all.
    """
    info = vmcore.info
    if info.symbol("prb") is not None:
        reader = _read_lockless
    elif info.symbol("log_buf") is not None and info.symbol("log_first_idx") is not None:
        reader = _read_variable_length
    elif info.symbol("log_buf") is not None and info.symbol("log_end") is not None:
        reader = _read_plain
    else:
        raise CorruptError("VMCOREINFO names no kernel log buffer (no prb, no log_buf)")
    log = KernelLog()
    try:
        reader(vmcore, log)
    except NoDataError as error:
        log.error = NoDataError(f"kernel log is not readable: {error}")
    except CorruptError as error:
        log.error = error
    return log


def format_log(log: KernelLog, caller_id: bool = False) -> bytes:
    """Format the log as ``makedumpfile --dump-dmesg`` writes it.

    :param caller_id: add the ``[  T1234]`` column, where the kernel records it.
    """
    if log.plain_text is not None:
        return log.plain_text
    return b"".join(_format_record(record, caller_id) for record in log.records)


def _format_record(record: LogRecord, caller_id: bool) -> bytes:
    seconds, nanos = divmod(record.ts_nsec, 1_000_000_000)
    prefix = f"[{seconds:5d}.{nanos // 1000:06d}] "
    if caller_id and record.caller_id is not None:
        kind = "C" if record.caller_id & _CALLER_IS_CPU else "T"
        prefix += f"[{kind + str(record.caller_id & ~_CALLER_IS_CPU):>{_CALLER_WIDTH}}] "
    newline = b"\n" + b" " * len(prefix)
    return prefix.encode() + _escape(record.text, newline) + b"\n"


_PRINTABLE = frozenset(range(0x20, 0x7F)) | frozenset(b" \t\n\v\f\r")
_ESCAPES = {
    # makedumpfile prints a *signed* char with %02x, so bytes from 0x80 come
    # out sign-extended ("\xffffffc3"); matching it keeps the output identical.
    byte: (f"\\x{byte:02x}" if byte < 0x80 else f"\\x{0xFFFFFF00 | byte:08x}").encode()
    for byte in range(256)
    if byte not in _PRINTABLE
}


def _escape(text: bytes, newline: bytes) -> bytes:
    if not any(byte in _ESCAPES for byte in set(text)):
        return text.replace(b"\n", newline)
    out = bytearray()
    for byte in text:
        if byte == 0x0A:
            out += newline
        elif byte in _ESCAPES:
            out += _ESCAPES[byte]
        else:
            out.append(byte)
    return bytes(out)


class _Struct:
    """Fields of one kernel struct, located through VMCOREINFO offsets."""

    def __init__(self, info: VmcoreInfo, names: tuple[str, ...]) -> None:
        self._info = info
        self._names = names

    def offset(self, member: str) -> int:
        for name in self._names:
            value = self._info.offset(f"{name}.{member}")
            if value is not None:
                return value
        raise CorruptError(f"VMCOREINFO lacks OFFSET({self._names[0]}.{member})")

    def has(self, member: str) -> bool:
        return any(self._info.offset(f"{name}.{member}") is not None for name in self._names)

    def size(self) -> int:
        for name in self._names:
            value = self._info.size(name)
            if value is not None:
                return value
        raise CorruptError(f"VMCOREINFO lacks SIZE({self._names[0]})")


def _u(data: bytes, offset: int, width: int) -> int:
    if offset < 0 or offset + width > len(data):
        raise CorruptError(f"field at {offset}+{width} lies outside a {len(data)}-byte struct")
    return int.from_bytes(data[offset : offset + width], "little")


def _read_lockless(vmcore: Vmcore, log: KernelLog) -> None:
    info = vmcore.info
    ring_struct = _Struct(info, ("printk_ringbuffer",))
    desc_ring = _Struct(info, ("prb_desc_ring",))
    data_ring = _Struct(info, ("prb_data_ring",))
    counter = info.offset("atomic_long_t.counter") or 0
    prb_symbol = info.symbol("prb")
    assert prb_symbol is not None
    prb = vmcore.read_virt(vmcore.read_u64(prb_symbol), ring_struct.size())
    descs_at = ring_struct.offset("desc_ring")
    text_at = ring_struct.offset("text_data_ring")
    count = 1 << _bits(_u(prb, descs_at + desc_ring.offset("count_bits"), 4), "descriptor")
    size = 1 << _bits(_u(prb, text_at + data_ring.offset("size_bits"), 4), "text data")
    desc_size, info_size = (
        _Struct(info, ("prb_desc",)).size(),
        _Struct(info, ("printk_info",)).size(),
    )
    ring = _LocklessRing(
        info=info,
        descs=vmcore.read_virt(_u(prb, descs_at + desc_ring.offset("descs"), 8), count * desc_size),
        infos=vmcore.read_virt(_u(prb, descs_at + desc_ring.offset("infos"), 8), count * info_size),
        text=vmcore.read_virt(_u(prb, text_at + data_ring.offset("data"), 8), size),
        count=count,
    )
    head = _u(prb, descs_at + desc_ring.offset("head_id") + counter, 8)
    tail = _u(prb, descs_at + desc_ring.offset("tail_id") + counter, 8)
    ids = _lockless_ids(tail, head, count)
    if ids is None:
        log.error = CorruptError(
            f"printk ring ids run from {tail:#x} to {head:#x}, more than its {count} descriptors;"
            f" only the newest {count} are read"
        )
        ids = _lockless_ids((head - count + 1) & _ID_MASK, head, count)
        assert ids is not None
    for desc_id in ids:
        record = ring.record(desc_id)
        if record is not None:
            log.records.append(record)


def _bits(value: int, what: str) -> int:
    if not 0 <= value <= 30 or (1 << value) > _MAX_RING_BYTES:
        raise CorruptError(f"printk {what} ring size 2^{value} is implausible")
    return value


def _lockless_ids(tail: int, head: int, count: int) -> Iterator[int] | None:
    """Descriptor ids from tail to head, inclusive, as makedumpfile walks them."""
    distance = (head - tail) & _ID_MASK
    if distance >= count:
        return None
    return ((tail + step) & _ID_MASK for step in range(distance + 1))


class _LocklessRing:
    def __init__(self, info: VmcoreInfo, descs: bytes, infos: bytes, text: bytes, count: int):
        self.info, self.descs, self.infos, self.text, self.count = info, descs, infos, text, count
        desc = _Struct(info, ("prb_desc",))
        lpos = _Struct(info, ("prb_data_blk_lpos",))
        printk_info = _Struct(info, ("printk_info",))
        self._desc_size = desc.size()
        self._state_at = desc.offset("state_var") + (info.offset("atomic_long_t.counter") or 0)
        self._begin_at = desc.offset("text_blk_lpos") + lpos.offset("begin")
        self._next_at = desc.offset("text_blk_lpos") + lpos.offset("next")
        self._info_size = printk_info.size()
        self._ts_at = printk_info.offset("ts_nsec")
        self._len_at = printk_info.offset("text_len")
        self._caller_at = printk_info.offset("caller_id") if printk_info.has("caller_id") else None

    def record(self, desc_id: int) -> LogRecord | None:
        """The record of one descriptor, or None if it holds no finished text."""
        desc = (desc_id % self.count) * self._desc_size
        state_var = _u(self.descs, desc + self._state_at, 8)
        state = state_var >> 62
        if state_var & _ID_MASK != desc_id or state not in (_DESC_COMMITTED, _DESC_FINALIZED):
            return None
        size = len(self.text)
        begin = _u(self.descs, desc + self._begin_at, 8) % size
        end = _u(self.descs, desc + self._next_at, 8) % size
        if begin == end:
            return None
        if begin > end:  # the block wrapped: its text starts at the ring's start
            begin = 0
        begin += 8  # the block starts with its descriptor id
        meta = (desc_id % self.count) * self._info_size
        text_len = min(_u(self.infos, meta + self._len_at, 2), max(0, end - begin))
        caller = None if self._caller_at is None else _u(self.infos, meta + self._caller_at, 4)
        return LogRecord(
            ts_nsec=_u(self.infos, meta + self._ts_at, 8),
            text=self.text[begin : begin + text_len],
            caller_id=caller,
        )


def _read_variable_length(vmcore: Vmcore, log: KernelLog) -> None:
    info = vmcore.info
    header = _Struct(info, ("printk_log", "log"))  # "struct log" until Linux 3.11
    header_size = header.size()
    len_at, text_len_at, ts_at = (
        header.offset("len"),
        header.offset("text_len"),
        header.offset("ts_nsec"),
    )
    caller_at = header.offset("caller_id") if header.has("caller_id") else None
    buf_len = vmcore.read_u32(_symbol(info, "log_buf_len"))
    if not 0 < buf_len <= _MAX_RING_BYTES:
        raise CorruptError(f"log_buf_len={buf_len} is implausible")
    buf = vmcore.read_virt(vmcore.read_u64(_symbol(info, "log_buf")), buf_len)
    index = vmcore.read_u32(_symbol(info, "log_first_idx"))
    end = vmcore.read_u32(_symbol(info, "log_next_idx"))
    seen: set[int] = set()
    while index != end:
        if index in seen:
            raise CorruptError(f"log_buf records loop back to index {index:#x}")
        seen.add(index)
        record = buf[index : index + header_size]
        if len(record) < header_size:
            raise CorruptError(f"log_buf record index {index:#x} is outside the buffer")
        length = _u(record, len_at, 2)
        if length == 0:  # a wrap marker: the next record is at the start
            index = 0
            continue
        text_at = index + header_size
        text_len = min(_u(record, text_len_at, 2), max(0, buf_len - text_at))
        caller = None if caller_at is None else _u(record, caller_at, 4)
        log.records.append(
            LogRecord(_u(record, ts_at, 8), buf[text_at : text_at + text_len], caller)
        )
        index += length


def _read_plain(vmcore: Vmcore, log: KernelLog) -> None:
    info = vmcore.info
    buf_len = vmcore.read_u32(_symbol(info, "log_buf_len"))
    if not 0 < buf_len <= _MAX_RING_BYTES:
        raise CorruptError(f"log_buf_len={buf_len} is implausible")
    buf = vmcore.read_virt(vmcore.read_u64(_symbol(info, "log_buf")), buf_len)
    log_end = vmcore.read_u32(_symbol(info, "log_end"))
    if log_end < buf_len:
        log.plain_text = buf[:log_end]
    else:
        start = log_end % buf_len
        log.plain_text = buf[start:] + buf[:start]


def _symbol(info: VmcoreInfo, name: str) -> int:
    address = info.symbol(name)
    if address is None:
        raise CorruptError(f"VMCOREINFO lacks SYMBOL({name})")
    return address
