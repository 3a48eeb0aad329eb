"""Compression on worker threads (makedumpfile's --num-threads).

Every codec releases the GIL while it compresses a batch, so N workers
compress N batches at once while the writer's thread reads the next ones and
writes the finished ones. The writer takes results in the order it submitted
them, so the file is the same as with one thread. Imported only when
threads are asked for: a crash kernel usually has one CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from capture.dumpfile.codecs import Buffer, Codec, StorePages

__all__ = ("CompressorPool",)


class CompressorPool:
    """``threads`` workers, each with a compressor of its own (a zstd
    context must not be shared between threads)."""

    def __init__(self, codec: Codec, page_size: int, threads: int) -> None:
        self._codec, self._page_size = codec, page_size
        self.threads = threads
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="compress")

    def submit(self, runs: Sequence[Buffer]) -> Future[tuple[list[bytes], list[int]]]:
        """Store ``runs`` on a worker."""
        return self._pool.submit(self._store, runs)

    def close(self) -> None:
        """Stop the workers; batches not started are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _store(self, runs: Sequence[Buffer]) -> tuple[list[bytes], list[int]]:
        store: StorePages | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._codec.make(self._page_size)
        return store(runs)
