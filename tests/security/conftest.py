"""Security tests (issue: every task payload is untrusted input): one module per item, each test
failing with its fix removed. They use the integration fixtures (real Postgres, Redis, worker)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import (
    audit_actions,
    flower,
    job_state,
    spawn,
    wait_job,
    worker,
)

__all__ = ["audit_actions", "flower", "job_state", "spawn", "wait_job", "worker"]

pytestmark = pytest.mark.integration
