"""`nlphub.system.freeze_heap`, and the model caches that call it (`lru_get`)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest

from nlphub.embeddings.platforms import lru_get
from nlphub.system import freeze_heap


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thaw() -> Iterator[None]:
    yield
    gc.unfreeze()


def _frozen(obj: Any) -> bool:
    """Whether `obj` is in the permanent generation (the collector's lists leave it out)."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_freeze_heap_freezes_what_lives_and_frees_cycles_dropped_since_an_earlier_freeze() -> None:
    dropped, kept = Node(), Node()
    gone = weakref.ref(dropped)
    gc.freeze()  # as an earlier freeze_heap left them
    assert _frozen(dropped) and _frozen(kept)
    del dropped
    gc.collect()
    assert gone() is not None  # frozen: the collector no longer sees the cycle
    freeze_heap()
    assert gone() is None
    assert _frozen(kept)
    assert gc.get_freeze_count() > 0


def test_lru_get_freezes_the_heap_after_making_a_value_and_frees_the_evicted_one() -> None:
    cache: OrderedDict[str, Node] = OrderedDict()
    lock = threading.Lock()
    first = lru_get(cache, lock, "a", 1, Node)
    assert _frozen(first)
    gone = weakref.ref(first)
    del first
    second = lru_get(cache, lock, "b", 1, Node)  # evicts "a"
    assert list(cache) == ["b"] and _frozen(second)
    assert gone() is None


def test_lru_get_does_not_collect_on_a_hit() -> None:
    cache: OrderedDict[str, Node] = OrderedDict()
    lock = threading.Lock()
    value = lru_get(cache, lock, "a", 2, Node)
    gc.unfreeze()
    collections = gc.get_stats()[2]["collections"]
    assert lru_get(cache, lock, "a", 2, Node) is value
    assert gc.get_stats()[2]["collections"] == collections
    assert not _frozen(value)
