"""Versions as the Spark NLP Models Hub understands them (design.md section 1).

The hub describes the Spark NLP ("lib") and Spark versions a resource was built for as
``{"parts": [2, 5, 0]}``. A resource is usable when its versions are *compatible* with the
installed ones, which follows Spark NLP's own ``Version.isCompatible``: the installed version
must be at least the resource's, and the resource may not state more parts than the installed
version does.

Pure functions only: no I/O, no logging. It sits at the top of `nlphub` (not in `nlphub.hub`)
because both the hub's metadata and the Spark NLP format checks of `nlphub.uploads` use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Version",
    "VersionError",
    "VersionSpec",
    "incompatibility_reason",
    "is_compatible",
]

MAX_PARSED_PARTS = 3
"""``Version.parse`` keeps at most this many integer parts, as Spark NLP does."""

_RC_SUFFIX = re.compile(r"-rc\d+", re.IGNORECASE)
_SEPARATORS = re.compile(r"[.\-]")
_INTEGER = re.compile(r"[0-9]+")


class VersionError(ValueError):
    """A version or version spec could not be read."""


@dataclass(frozen=True, order=True)
class Version:
    """A version as a tuple of non-negative integer parts, e.g. ``Version((5, 4, 0))``.

    Ordering is the tuple ordering of ``parts``, so ``2.4 < 2.4.0 < 2.5``.
    """

    parts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.parts, tuple):
            raise VersionError(f"version parts must be a tuple, got {self.parts!r}")
        if not self.parts:
            raise VersionError("a version needs at least one part")
        for part in self.parts:
            if isinstance(part, bool) or not isinstance(part, int) or part < 0:
                raise VersionError(
                    f"version parts must be non-negative integers, got {self.parts!r}"
                )

    def __str__(self) -> str:
        return ".".join(str(part) for part in self.parts)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Read a version string the way Spark NLP does.

        ``-rc<N>`` suffixes are dropped, the rest is split on ``.`` and ``-``, and the leading
        integer parts (at most three) are kept: ``"5.4.0-rc2"`` -> 5.4.0,
        ``"3.5.1-amzn-0"`` -> 3.5.1, ``"3.3.0.1"`` -> 3.3.0.

        Raises:
            VersionError: when not even the first part is an integer.
        """
        if not isinstance(text, str):
            raise VersionError(f"cannot read a version from {text!r}: not a string")
        cleaned = _RC_SUFFIX.sub("", text.strip())
        parts: list[int] = []
        for piece in _SEPARATORS.split(cleaned):
            if len(parts) == MAX_PARSED_PARTS or not _INTEGER.fullmatch(piece):
                break
            parts.append(int(piece))
        if not parts:
            raise VersionError(f"cannot read a version from {text!r}: no integer part")
        return cls(tuple(parts))

    @classmethod
    def from_parts(cls, obj: Mapping[str, Any] | Sequence[int] | None) -> Version | None:
        """Read the hub's ``{"parts": [2, 5, 0]}`` shape (or a bare list of parts).

        ``None``, a mapping without ``parts``, a null ``parts`` or an empty list give ``None``
        (the hub states no version). All parts are kept, unlike ``parse``.

        Raises:
            VersionError: when ``parts`` holds anything but non-negative integers.
        """
        if obj is None:
            return None
        if isinstance(obj, Mapping):
            raw = obj.get("parts")
        elif isinstance(obj, str | bytes):
            raise VersionError(f"expected {{'parts': [...]}} or a list of parts, got {obj!r}")
        else:
            raw = obj
        if raw is None:
            return None
        if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
            raise VersionError(f"version parts must be a list of integers, got {raw!r}")
        if len(raw) == 0:
            return None
        return cls(tuple(raw))


def is_compatible(installed: Version | None, found: Version | None) -> bool:
    """Whether a resource built for ``found`` can run on the ``installed`` version.

    Spark NLP's rule: no ``found`` version -> compatible; ``found`` with more parts than
    ``installed`` -> incompatible; otherwise parts are compared left to right, equal parts go
    on, and at the first difference ``installed`` must be the greater (after which the later
    parts do not matter); all compared parts equal -> compatible.

    So 3.4.0 can use 3.2.1, 3.1 cannot use 3.2, 1.2.3 can use 1.2, 1.2 cannot use 1.2.3.

    An unknown ``installed`` version (``None``) cannot be shown to satisfy a stated ``found``
    version, so that case is incompatible.
    """
    if found is None:
        return True
    if installed is None:
        return False
    if len(found.parts) > len(installed.parts):
        return False
    for have, need in zip(installed.parts, found.parts, strict=False):
        if have != need:
            return have > need
    return True


def incompatibility_reason(
    installed: Version | None, found: Version | None, what: str
) -> str | None:
    """Why a resource built for ``found`` cannot run on ``installed``; ``None`` if it can.

    ``what`` names the software, e.g. ``"Spark NLP"`` or ``"Spark"``. The sentence names both
    versions, e.g. ``"needs Spark NLP >= 5.4.0 (resource built for 5.4.0), installed 5.1.2"``.
    """
    if is_compatible(installed, found):
        return None
    assert found is not None  # is_compatible is True without a found version
    if installed is None:
        return (
            f"needs {what} >= {found} (resource built for {found}), "
            f"installed {what} version unknown"
        )
    if len(found.parts) > len(installed.parts):
        return (
            f"needs {what} >= {found} (resource built for {found}, stating "
            f"{len(found.parts)} version parts), installed {installed} states only "
            f"{len(installed.parts)}"
        )
    return f"needs {what} >= {found} (resource built for {found}), installed {installed}"


Operator = Literal["==", "!=", ">=", "<=", ">", "<"]

_CLAUSE = re.compile(r"\s*(==|!=|>=|<=|>|<)?\s*([0-9]+(?:\.[0-9]+)*)\s*")


def _padded(a: Version, b: Version) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a.parts), len(b.parts))
    return (
        a.parts + (0,) * (width - len(a.parts)),
        b.parts + (0,) * (width - len(b.parts)),
    )


def _satisfies(version: Version, op: Operator, bound: Version) -> bool:
    left, right = _padded(version, bound)
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if op == ">=":
        return left >= right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left < right


@dataclass(frozen=True)
class VersionSpec:
    """A comma-separated conjunction of version clauses, e.g. ``">=5.0,<6"``.

    Operators: ``==``, ``!=``, ``>=``, ``<=``, ``>``, ``<``; a bare version means ``==``.
    Versions are compared after padding the shorter one with zeros, so ``==5.1`` contains
    5.1 and 5.1.0 but not 5.1.2, and ``<6`` excludes 6.0.0.
    """

    clauses: tuple[tuple[Operator, Version], ...]

    def __post_init__(self) -> None:
        if not self.clauses:
            raise VersionError("a version spec needs at least one clause")

    def __str__(self) -> str:
        return ",".join(f"{op}{version}" for op, version in self.clauses)

    @classmethod
    def parse(cls, text: str) -> VersionSpec:
        """Read a spec such as ``">=5.0,<6"``, ``"==5.1.2"`` or ``"5.1"``.

        Raises:
            VersionError: on an empty spec, an empty clause, an unknown operator or a
                version that is not dot-separated integers.
        """
        if not isinstance(text, str) or not text.strip():
            raise VersionError(f"empty version spec {text!r}")
        clauses: list[tuple[Operator, Version]] = []
        for raw in text.split(","):
            match = _CLAUSE.fullmatch(raw)
            if match is None:
                raise VersionError(
                    f"bad version spec {text!r}: cannot read clause {raw.strip()!r} "
                    "(expected e.g. '>=5.0', '<6' or '5.1.2')"
                )
            op: Operator = match.group(1) or "=="  # type: ignore[assignment]
            version = Version(tuple(int(part) for part in match.group(2).split(".")))
            clauses.append((op, version))
        return cls(tuple(clauses))

    def contains(self, version: Version) -> bool:
        """Whether ``version`` satisfies every clause."""
        return all(_satisfies(version, op, bound) for op, bound in self.clauses)

    def __contains__(self, version: object) -> bool:
        return isinstance(version, Version) and self.contains(version)
