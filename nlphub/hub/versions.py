"""Versions as the Spark NLP Models Hub understands them: `nlphub.versions`, re-exported.

The definitions live in `nlphub.versions` so that `nlphub.uploads` (its Spark NLP format
checks) can use them without importing the hub. Pure: no I/O, no logging.
"""

from __future__ import annotations

from nlphub.versions import (
    Version,
    VersionError,
    VersionSpec,
    incompatibility_reason,
    is_compatible,
)

__all__ = [
    "Version",
    "VersionError",
    "VersionSpec",
    "incompatibility_reason",
    "is_compatible",
]
