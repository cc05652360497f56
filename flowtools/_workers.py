"""Helpers for worker processes of local process pools (batch gating, report plots)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

__all__ = ["exit_with_parent"]


def exit_with_parent() -> None:
    """In a pool worker: end the process once the process that started the pool is gone.

    A worker otherwise waits on its task queue for ever after the coordinator is killed
    (kill -9): the queue's pipe stays open in the other workers, and a fork server stays up
    while any worker does. ``multiprocessing.parent_process().sentinel`` becomes ready when
    the coordinator exits, zombie or not (with a fork server, too: the coordinator keeps the
    write end of each child's data pipe open for this). A no-op outside a multiprocessing child.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="flowtools-parent-watch", daemon=True).start()
