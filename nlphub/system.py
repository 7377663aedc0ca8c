"""Facts about the machine this process runs on."""

from __future__ import annotations

import gc
import os


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask on Linux), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def freeze_heap() -> None:
    """Collect once, then move every object alive to the permanent generation (`gc.freeze`),
    which the cyclic garbage collector no longer walks.

    For a process that has just loaded something large that it keeps (a sentence-transformers
    model with torch and transformers): every full collection, triggered by any
    allocation-heavy step, would walk all of its objects (see docs/decisions.md, Freezing the
    heap after a model load). Frozen objects are still freed by reference counting; what was
    frozen earlier is first handed back to the collector (`gc.unfreeze`), so reference cycles
    in whatever was dropped since (an evicted model) are freed by the collection here. Until
    then, a cycle frozen with the rest (an object that was alive at the load and dropped after)
    stays in memory: at most what was alive at one load.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
