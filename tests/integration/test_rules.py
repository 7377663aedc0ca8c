"""Rules in Postgres: import (all or nothing), export round trip, edits that need a redeploy."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.preannotation.service import REDEPLOY_MESSAGE, set_server
from nlphub.rules.model import RuleError
from nlphub.rules.service import delete_rule, export, import_rules, list_rules, save_rule, spec_of
from schemas.db import get_engine, session_scope
from schemas.models import Redeploy, Rule
from schemas.states import JobState

pytestmark = pytest.mark.integration

HEIGHT = {
    "name": "height",
    "type": "regex",
    "entity": "HEIGHT",
    "regex": "[0-7]'((0?[0-9])|(1(0|1)))",
}
FEMALE = {
    "name": "female",
    "type": "dictionary",
    "entity": "FEMALE",
    "dictionary": ["woman", "lady", "girl"],
}


def _zip(files: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content if isinstance(content, str) else json.dumps(content))
    return buf.getvalue()


def _count() -> int:
    with Session(get_engine()) as session:
        return len(session.exec(select(Rule)).all())


def test_import_export_round_trip(env) -> None:
    with session_scope() as session:
        change = import_rules(
            session,
            _zip({"height.json": HEIGHT, "female.json": FEMALE}),
            filename="rules.zip",
            actor="t",
        )
    assert sorted(change.rules) == ["female", "height"]
    with session_scope() as session:
        exported = export(session)
        before = [spec_of(r) for r in list_rules(session)]
    with session_scope() as session:
        for rule in ("height", "female"):
            delete_rule(session, rule, actor="t")
    with session_scope() as session:
        import_rules(session, exported, filename="export.zip", actor="t")
    with session_scope() as session:
        assert [spec_of(r) for r in list_rules(session)] == before
        assert export(session) == exported  # byte for byte


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.json": {**HEIGHT, "regex": "[0-7"}}, "a.json: regex:"),
        ({"f.json": {**FEMALE, "dictionary": []}}, "f.json: dictionary:"),
        ({"x.json": {**HEIGHT, "type": "lookup"}}, "x.json: type:"),
        ({"a.json": HEIGHT, "b.json": HEIGHT}, "duplicate"),
        ({"notes.txt": "hello"}, "notes.txt"),
    ],
)
def test_bad_import_names_file_and_field_and_writes_nothing(env, files, message) -> None:
    good = {"ok.json": {**FEMALE, "name": "ok"}}
    with pytest.raises(RuleError) as info, session_scope() as session:
        import_rules(session, _zip({**good, **files}), filename="rules.zip", actor="t")
    assert message in str(info.value), str(info.value)
    assert _count() == 0


def test_import_refuses_existing_names_unless_replace(env) -> None:
    with session_scope() as session:
        import_rules(session, json.dumps(HEIGHT).encode(), filename="h.json", actor="t")
    with (
        pytest.raises(RuleError, match=r"h.json: name: 'height' already exists"),
        session_scope() as session,
    ):
        import_rules(session, json.dumps(HEIGHT).encode(), filename="h.json", actor="t")
    with session_scope() as session:
        import_rules(
            session, json.dumps(HEIGHT).encode(), filename="h.json", actor="t", replace=True
        )
        assert list_rules(session)[0].version == 2


def test_editing_a_rule_used_by_a_server_asks_for_a_redeploy(env, audit_actions) -> None:
    with session_scope() as session:
        save_rule(session, HEIGHT, actor="t")
        set_server(
            session, name="pre", url="http://127.0.0.1:9", models=[], rules=["height"], actor="t"
        )
    with session_scope() as session:
        change = save_rule(session, {"name": "height", "regex": "[0-9]+'"}, actor="ann")
    assert change.servers == ["pre"] and change.message == REDEPLOY_MESSAGE
    with Session(get_engine()) as session:
        rule = session.exec(select(Rule)).one()
        assert (rule.version, rule.regex) == (2, "[0-9]+'")
        assert session.exec(select(Redeploy)).one().state == "pending"
    assert "rule.edited" in audit_actions() and "redeploy.requested" in audit_actions()


def test_rule_tasks_for_other_apps(env, worker, wait_job) -> None:
    job = wait_job(nlphub.enqueue("nlphub.rules_import", {"content": json.dumps([HEIGHT])}))
    assert job.state == JobState.SUCCEEDED, job.error
    out = env["home"] / "exports" / "rules.zip"  # NLPHUB_EXPORT_ROOTS' default
    job = wait_job(nlphub.enqueue("nlphub.rules_export", {"path": str(out)}))
    assert job.state == JobState.SUCCEEDED and zipfile.ZipFile(out).namelist() == ["height.json"]
    bad = wait_job(
        nlphub.enqueue(
            "nlphub.rules_import", {"content": json.dumps({**HEIGHT, "name": "h2", "regex": "("})}
        )
    )
    assert bad.state == JobState.FAILED and "regex" in bad.error
