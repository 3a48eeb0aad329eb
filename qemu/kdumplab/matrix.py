"""Device matrix: run the reference capture with the dump disk on each
storage controller, and with each NIC model checking the capture kernel's
network path to a listener on 127.0.0.1 (user networking, restrict=on).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass

from .lab import drop_vmcore, make_vmcore
from .util import LabError, cache_dir
from .vm import DISK_DEVICES, NIC_MODELS

# Small workload: the matrix is about devices, not memory contents.
MATRIX_WORKLOAD = {"CACHE_MB": 0, "SHM_MB": 0, "ANON_MB": 8, "ZERO_MB": 0, "SLAB_FILES": 0}


@dataclass
class Row:
    """One matrix line."""

    kind: str  # disk | nic
    device: str
    ok: bool
    seconds: float
    detail: str


class Listener:
    """A one-shot TCP sink on 127.0.0.1 that the guest reaches via guestfwd."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.port: int = self.sock.getsockname()[1]
        self.data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Accept connections (QEMU connects at start-up) and collect bytes."""
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.5)
            with conn:
                # header line + 64 KiB of vmcore, then hang up (nc never closes)
                while not self._stop.is_set() and not self._complete():
                    try:
                        chunk = conn.recv(65536)
                    except (TimeoutError, OSError):
                        continue
                    if not chunk:
                        break
                    self.data += chunk

    def _complete(self) -> bool:
        """True once the header line and 64 KiB of vmcore have arrived."""
        nl = self.data.find(b"\n")
        return nl >= 0 and len(self.data) >= nl + 1 + 65536

    def close(self) -> None:
        """Stop the thread and the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _disk_row(kernel: str, device: str, memory_mb: int, timeout: float) -> Row:
    """Capture with the dump disk behind `device`."""
    out = cache_dir() / "matrix" / kernel / device
    start = time.monotonic()
    try:
        res = make_vmcore(
            kernel, memory_mb, MATRIX_WORKLOAD, out_dir=out, dump_device=device, timeout=timeout
        )
    except LabError as exc:
        return Row("disk", device, False, time.monotonic() - start, _why(exc))
    drop_vmcore(res)
    dev = re.search(r"CRASHLAB: dumping to (\S+)", res.console.read_text(errors="replace"))
    via = dev.group(1) if dev else "?"
    return Row(
        "disk",
        device,
        True,
        res.info.get("seconds", 0.0),
        f"vmcore {res.info['vmcore_size'] >> 20} MiB via {via}",
    )


def _nic_row(kernel: str, nic: str, memory_mb: int, timeout: float) -> Row:
    """Capture (dump on virtio-blk) while checking link + TCP to the host."""
    out = cache_dir() / "matrix" / kernel / f"nic-{nic}"
    listener = Listener()
    start = time.monotonic()
    try:
        res = make_vmcore(
            kernel,
            memory_mb,
            MATRIX_WORKLOAD,
            out_dir=out,
            nic=nic,
            timeout=timeout,
            net_port=listener.port,
        )
    except LabError as exc:
        return Row("nic", nic, False, time.monotonic() - start, _why(exc))
    finally:
        listener.close()
    drop_vmcore(res)
    text = res.console.read_text(errors="replace")
    link = re.search(r"CRASHLAB-NET: (\S+) carrier=(\S*) driver=(\S*)", text)
    got = bytes(listener.data)
    ok_hdr = got.startswith(b"CRASHLAB-NET-OK")
    elf = b"\x7fELF" in got[:200]
    detail = (
        f"{link.group(1)} driver={link.group(3)} carrier={link.group(2)}; "
        if link
        else "no interface; "
    )
    detail += f"host got {len(got)} bytes" + (", vmcore ELF header" if elf else "")
    ok = bool(link and link.group(2) == "1" and ok_hdr and elf)
    return Row("nic", nic, ok, time.monotonic() - start, detail)


def _why(exc: LabError) -> str:
    """First line of the error plus the last console line, for the table."""
    msg = str(exc).splitlines()
    last = [ln for ln in msg[1:] if ln.strip() and not ln.startswith("---")]
    return msg[0] + (f" | console: {last[-1].strip()[:120]}" if last else "")


def run_matrix(
    kernel: str,
    memory_mb: int = 384,
    timeout: float = 300,
    disks: list[str] | None = None,
    nics: list[str] | None = None,
) -> list[Row]:
    """Run every row and return the results (failures carry their reason)."""
    rows: list[Row] = []
    for dev in disks if disks is not None else list(DISK_DEVICES):
        rows.append(_disk_row(kernel, dev, memory_mb, timeout))
        print(format_row(rows[-1]), flush=True)
    for nic in nics if nics is not None else list(NIC_MODELS):
        rows.append(_nic_row(kernel, nic, memory_mb, timeout))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: Row) -> str:
    """One table line."""
    return (
        f"{row.kind:<5} {row.device:<12} {'OK' if row.ok else 'FAIL':<5} "
        f"{row.seconds:6.1f}s  {row.detail}"
    )


def format_table(kernel: str, rows: list[Row]) -> str:
    """The whole table with a header and a summary line."""
    head = f"kernel {kernel}\n{'kind':<5} {'device':<12} {'res':<5} {'time':>7}  detail"
    ok = sum(r.ok for r in rows)
    return "\n".join([head, *map(format_row, rows), f"{ok} passed, {len(rows) - ok} failed"])


__all__ = ["Row", "format_table", "run_matrix"]
