"""The doctor's parts: a finding (one line: verdict, what, what to fix), a check (a function
that observes one part of the installation and judges it), and running checks concurrently,
each bounded by its own time budget so that the doctor never hangs on a part that does not
answer.

A check's observation (connect, ask, read) is kept apart from its verdict (a pure function of
what was observed), which the unit tests call with made-up observations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from nlphub.redact import redact_text
from schemas.settings import Settings

__all__ = [
    "Check",
    "Context",
    "Finding",
    "Status",
    "exit_code",
    "one_line",
    "run_checks",
    "summary",
]


def one_line(exc: BaseException) -> str:
    """An error as one line, without a URL's password: the driver's own error when SQLAlchemy
    wrapped it (its first line), else the exception's."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return redact_text(text[0].strip() if text else type(inner).__name__)


class Status(StrEnum):
    OK = "ok"
    #: Works, but something is worth knowing (an optional part missing, a licence ending soon).
    WARN = "warn"
    #: Broken: the doctor exits 1.
    FAIL = "fail"
    #: Not checked: turned off with --skip, or a part it needs is broken (that one failed).
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report: `check` is the check that made it (what --skip takes),
    `name` the part it is about ("worker: downloads"), `summary` what was found, `fix` what to
    do about it (empty when nothing is to be done)."""

    check: str
    name: str
    status: Status
    summary: str
    fix: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["seconds"] = round(self.seconds, 3)
        return data


def ok(check: str, summary: str, *, name: str | None = None) -> Finding:
    return Finding(check, name or check, Status.OK, summary)


def warn(check: str, summary: str, fix: str = "", *, name: str | None = None) -> Finding:
    return Finding(check, name or check, Status.WARN, summary, fix)


def fail(check: str, summary: str, fix: str = "", *, name: str | None = None) -> Finding:
    return Finding(check, name or check, Status.FAIL, summary, fix)


def skip(check: str, summary: str, *, name: str | None = None) -> Finding:
    return Finding(check, name or check, Status.SKIP, summary)


@dataclass
class Context:
    """What every check gets: the settings, the per-check time budget (seconds), the options
    of the command (`deep`, `min_free` bytes, `licence_days`), and the findings of the checks
    that ran before (by check name)."""

    settings: Settings
    timeout: float = 5.0
    deep: bool = False
    min_free: int = 1 << 30
    licence_days: int = 30
    done: dict[str, list[Finding]] = field(default_factory=dict)
    #: What checks share within one run (the doctor's database engine, …).
    shared: dict[str, Any] = field(default_factory=dict)

    def failed(self, check: str) -> bool:
        return any(f.status == Status.FAIL for f in self.done.get(check, ()))


@dataclass(frozen=True)
class Check:
    """A named check: `run` observes and judges, returning one finding or more. It runs after
    the checks it `needs` (and is skipped, saying so, when one of them failed) and those it
    comes `after`, within
    `budget(ctx)` seconds (default: the context's timeout)."""

    name: str
    run: Callable[[Context], list[Finding]]
    needs: tuple[str, ...] = ()
    #: Checks to run before this one, whose outcome it reads but does not need.
    after: tuple[str, ...] = ()
    budget: Callable[[Context], float] = lambda ctx: ctx.timeout
    #: What the doctor says when the check runs out of time (a warning, not a failure, for a
    #: check whose slowness says nothing about health, e.g. a long audit chain).
    on_timeout: Status = Status.FAIL
    timeout_fix: str = ""


def _run_one(check: Check, ctx: Context) -> list[Finding]:
    """Run `check` on a daemon thread and wait at most its budget: a check that does not
    answer in time becomes a finding saying so (its thread is left behind; the process exits
    without waiting for it)."""
    for need in check.needs:
        if ctx.failed(need):
            return [skip(check.name, f"not checked: {need} failed (fix that first)")]
    budget = check.budget(ctx)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["findings"] = check.run(ctx)
        except Exception as exc:  # a check that crashes is a finding, not a crash
            box["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=target, name=f"doctor-{check.name}", daemon=True)
    thread.start()
    thread.join(budget)
    took = time.monotonic() - start
    if thread.is_alive():
        found = Finding(
            check.name,
            check.name,
            check.on_timeout,
            f"no answer within {budget:g} s",
            check.timeout_fix or "see why it is slow; --timeout gives checks more time",
        )
        return [found]
    if "error" in box:
        exc = box["error"]
        message = one_line(exc)
        return [
            Finding(
                check.name,
                check.name,
                Status.FAIL,
                f"the check itself failed: {type(exc).__name__}: {message}",
            )
        ]
    findings: list[Finding] = box.get("findings") or []
    return [Finding(f.check, f.name, f.status, f.summary, f.fix, round(took, 3)) for f in findings]


def _concurrently(wave: Sequence[Check], ctx: Context) -> dict[str, list[Finding]]:
    """Run the checks of `wave` at once; their findings by check name."""
    outcome: dict[str, list[Finding]] = {}

    def one(check: Check) -> None:
        outcome[check.name] = _run_one(check, ctx)

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in wave]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def run_checks(
    checks: Sequence[Check], ctx: Context, *, skip_names: Sequence[str] = ()
) -> list[Finding]:
    """Run `checks` in waves: each wave runs concurrently the checks whose needs have run, so
    the whole takes about the slowest budget per wave, not their sum. Findings come back in the
    order of `checks`."""
    pending = list(checks)
    results: dict[str, list[Finding]] = {}
    for name in skip_names:
        results[name] = [skip(name, "skipped (--skip)")]
        ctx.done[name] = results[name]
    pending = [c for c in pending if c.name not in results]
    while pending:
        wave = [c for c in pending if all(n in ctx.done for n in (*c.needs, *c.after))]
        if not wave:  # needs that are no check here: run them all, they judge on their own
            wave = list(pending)
        outcome = _concurrently(wave, ctx)
        for check in wave:
            results[check.name] = ctx.done[check.name] = outcome[check.name]
        pending = [c for c in pending if c.name not in results]
    order = [c.name for c in checks]
    return [f for name in order for f in results.get(name, [])]


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when nothing failed (warnings and skips allowed), else 1."""
    return 1 if any(f.status == Status.FAIL for f in findings) else 0


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    """How many findings of each status."""
    counts = {status.value: 0 for status in Status}
    for finding in findings:
        counts[finding.status.value] += 1
    return counts
