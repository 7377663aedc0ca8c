"""Fault tests (issue 7): real servers, real worker processes, bounded loops, loopback only.

The integration fixtures (per-test database, worker, spawn, job helpers, hub mirror) are
shared from tests/integration/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import (  # noqa: F401
    audit_actions,
    job_state,
    mirror,
    spark_written,
    spawn,
    wait_job,
    worker,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
