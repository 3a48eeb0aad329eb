"""Reading and compression on worker threads (makedumpfile's --num-threads).

Reads and every codec release the GIL, so N workers read and compress N
batches at once while the writer's thread plans the next ones and writes the
finished ones. The writer takes results in the order it submitted them, so
the file is the same as with one thread. Imported only when threads are
asked for: a crash kernel usually has one CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from capture.dumpfile.codecs import Codec, StorePages

_Result = TypeVar("_Result")

__all__ = ("CompressorPool",)


class CompressorPool:
    """``threads`` workers, each with a compressor of its own (a zstd
    context must not be shared between threads)."""

    def __init__(self, codec: Codec, page_size: int, threads: int) -> None:
        self._codec, self._page_size = codec, page_size
        self.threads = threads
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="compress")

    def submit(self, job: Callable[[StorePages], _Result]) -> Future[_Result]:
        """Run ``job`` on a worker, given that worker's compressor."""
        return self._pool.submit(self._run, job)

    def close(self) -> None:
        """Stop the workers; batches not started are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Callable[[StorePages], _Result]) -> _Result:
        store: StorePages | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._codec.make(self._page_size)
        return job(store)
