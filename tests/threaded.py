"""Ranks as threads: run one function per rank and collect each rank's result or error."""
from __future__ import annotations

import threading
from typing import Any, Callable


def run_ranks(size: int, rank_main: Callable[[int], Any], timeout: float) -> list:
    """rank_main(rank) on `size` threads; each rank's return value, or the exception it raised.

    A rank still running after `timeout` seconds reports None (the thread is a daemon).
    """
    results: list = [None] * size

    def run(rank: int) -> None:
        try:
            results[rank] = rank_main(rank)
        except Exception as error:  # reported by the caller
            results[rank] = error

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results
