"""nlphub: Celery workers that keep an annotation platform's NLP resources in order.

The public API for other Python apps:

    import nlphub
    job_id = nlphub.enqueue("nlphub.inventory", {"verify_checksums": True}, requested_by="app")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "enqueue"]


def __getattr__(name: str) -> Any:
    if name == "enqueue":
        from nlphub.jobs import enqueue

        return enqueue
    raise AttributeError(name)
