"""Task payloads: the stable contract for apps that enqueue nlphub jobs.

Each task name (e.g. `nlphub.inventory`) has one pydantic model here; its JSON schema is what
other apps validate against (`nlphub tasks schema`). Secrets are never payload fields: a payload
names a secret (`*_ref`) and the worker reads it from its settings.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.embedding_platforms import Platform


def _one_printable_line(value: str) -> str:
    """Who asked or decided is written into log lines and the audit log: no newline or control
    character may forge a line there."""
    if not value.isprintable():
        raise ValueError(
            "must be one line of printable text (no newlines, tabs or control characters)"
        )
    return value


#: Who asked for a job or decided (`requested_by`, `confirmed_by`): one printable line.
Identity = Annotated[
    str,
    Field(min_length=1, max_length=255, description="one line of printable text"),
    AfterValidator(_one_printable_line),
]
#: An id a caller gives (a record's id, a label): as long as the columns that store them.
Ident = Annotated[str, Field(max_length=255)]
#: Most items in a list of labels or rule names.
MAX_LIST_ITEMS = 10_000
#: Most bytes of a rule given inline (compact JSON): `nlphub.rules.model.MAX_RULE_JSON_BYTES`,
#: the largest rule file (schemas cannot import nlphub; a test keeps the two equal).
MAX_RULE_BYTES = 5 * 2**20

_IDENTITY: TypeAdapter[str] = TypeAdapter(Identity)


def claimed_identity(value: Any, default: str) -> str:
    """`value` if it is a valid `requested_by` (after the payloads' stripping), else `default`:
    the actor a refused delivery is recorded with, never a forged or oversized one."""
    if not isinstance(value, str) or len(value) > 4096:
        return default
    try:
        return _IDENTITY.validate_python(value.strip())
    except ValidationError:
        return default


class Payload(BaseModel):
    """Common fields of every payload."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    requested_by: Identity = "system"


class PingPayload(Payload):
    """Check the whole path (enqueue → broker → worker → job row → audit) end to end."""


class InventoryPayload(Payload):
    """Scan NLPHUB_HOME and reconcile it with the resource table."""

    verify_checksums: bool = True


class DeletePayload(Payload):
    """Delete one resource's files and mark it deleted."""

    resource_id: uuid.UUID | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)
    language: str = Field(default="en", min_length=1, max_length=16)
    version: str | None = Field(default=None, max_length=64)
    force: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> DeletePayload:
        if self.resource_id is None and not self.name:
            raise ValueError("give resource_id or name")
        return self


class DownloadPayload(Payload):
    """Download, verify and install a hub resource (by name, or a resource already queued)."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    language: str = Field(default="en", min_length=1, max_length=16)
    version: str | None = Field(default=None, max_length=64, description="e.g. '5.4.1' or '>=5,<6'")
    redownload: bool = False
    resource_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _one_target(self) -> DownloadPayload:
        if self.resource_id is None and not self.name:
            raise ValueError("give name (and language, version) or resource_id")
        return self


class ResourcePayload(Payload):
    """A task about one resource."""

    resource_id: uuid.UUID


class UploadPayload(Payload):
    """Validate a custom upload (zip or folder on shared storage) and install it if valid."""

    path: str = Field(min_length=1, max_length=4096)
    kind: Literal["model", "embeddings", "pipeline"]
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    language: str = Field(default="en", min_length=1, max_length=16, pattern=r"^[a-z]{2,3}$|^xx$")
    version: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    labels: list[Ident] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    edition: str | None = Field(default=None, max_length=64)


class CheckUpdatesPayload(Payload):
    """Look for newer compatible versions of installed resources."""

    reason: Literal["startup", "schedule", "manual"] = "manual"
    #: Skip when a check ran less than this many seconds ago (start-up checks collapse).
    min_interval: float = Field(default=0.0, ge=0, le=7 * 86400)
    sync: bool = Field(default=True, description="Read the hubs first")


class UpdateDecisionPayload(Payload):
    """Apply (download) or dismiss an update notice; `confirmed_by` is who decided."""

    notice_id: uuid.UUID
    confirmed_by: Identity


class RedeployPayload(Payload):
    """Redeploy the pre-annotation servers whose pending changes are past the debounce."""

    debounce: float | None = Field(default=None, ge=0, le=3600)


class RulesImportPayload(Payload):
    """Import rules (all or nothing) from a file on shared storage or from JSON content."""

    path: str | None = Field(default=None, max_length=4096)
    content: str | None = Field(default=None, max_length=20 * 2**20)
    replace: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> RulesImportPayload:
        if (self.path is None) == (self.content is None):
            raise ValueError("give exactly one of path or content")
        return self


class RuleSavePayload(Payload):
    """Create a rule or edit the one with the same name (fields as in the rule JSON)."""

    rule: dict[str, Any]

    @field_validator("rule")
    @classmethod
    def _bounded(cls, rule: dict[str, Any]) -> dict[str, Any]:
        """A rule is stored in the job row and audited: no larger than a rule file may be."""
        try:
            text = json.dumps(rule, ensure_ascii=False, separators=(",", ":"), default=str)
        except (RecursionError, TypeError, ValueError):
            raise ValueError("must be a rule as a JSON object (this one is not JSON)") from None
        size = len(text.encode())
        if size > MAX_RULE_BYTES:
            raise ValueError(f"is {size:,} bytes as JSON, above the {MAX_RULE_BYTES:,} limit")
        return rule


class RuleNamePayload(Payload):
    name: str = Field(min_length=1, max_length=128)


class RulesExportPayload(Payload):
    """Export rules (all, or `names`) as a ZIP of one JSON per rule, written to `path`."""

    path: str = Field(min_length=1, max_length=4096)
    names: list[Annotated[str, Field(max_length=128)]] | None = Field(
        default=None, max_length=MAX_LIST_ITEMS
    )


#: A model is a name, never a path: no leading ``/``, ``.`` or ``~``, no ``..``, no ``\\``.
_MODEL_TEXT = r"^[A-Za-z0-9][A-Za-z0-9._:/?=&@+-]*$"
_MODEL_REFUSAL = (
    "a model name, not a path: a Hugging Face model id ('name' or 'org/name', "
    "optionally '?backend=onnx'), a model the operator added to the models cache, or for "
    "spark 'sparknlp:<name or id of an installed embeddings resource>'"
)


class ComputeEmbeddingsPayload(Payload):
    """Embed a dataset's text attribute. An HTTP platform's key is named, never given:
    `api_key_ref` names a credential the operator declared (`NLPHUB_CREDENTIALS`), and
    `base_url` (else the platform's default) must be one of that credential's endpoints.
    `model` is a name, never a server path (decided on its text alone, so a refusal says
    nothing about what exists on the server): huggingface models are hub ids or models in the
    operator's models cache, spark NLP models installed resources (``sparknlp:<name or id>``)."""

    dataset: str = Field(min_length=1, max_length=255)
    attribute: str = Field(min_length=1, max_length=255)
    platform: Platform
    model: str = Field(min_length=1, max_length=512)
    granularity: Literal["attribute", "token"] = "attribute"
    dims: int | None = Field(default=None, ge=1, le=4096)
    api_key_ref: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$"
    )
    base_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    embedding_id: uuid.UUID | None = None

    @field_validator("model")
    @classmethod
    def _model_is_a_name(cls, model: str, info: ValidationInfo) -> str:
        platform = info.data.get("platform")
        name = model.partition("?")[0]
        nlp = platform == "spark" and model.lower().startswith("sparknlp:")
        if (
            not re.fullmatch(_MODEL_TEXT, model)
            or ".." in model
            or "//" in model
            or (platform == "huggingface" and (name.count("/") > 1 or ":" in name))
            or (nlp and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model[len("sparknlp:") :]))
        ):
            raise ValueError(_MODEL_REFUSAL)
        return model


class EmbedRecordsPayload(Payload):
    """Embed new or edited records with an embedding's stored model, reducer, credential and
    endpoint. `base_url` is accepted for compatibility and ignored: the key goes only to the
    endpoint stored with the embedding."""

    embedding_id: uuid.UUID
    records: list[Ident] = Field(min_length=1, max_length=100_000)
    base_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")


class SimilarPayload(Payload):
    """Nearest records to a record or a query text (cosine, attribute-level vectors)."""

    dataset: str = Field(min_length=1, max_length=255)
    record: Ident | None = None
    text: str | None = Field(default=None, max_length=100_000)
    k: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_query(self) -> SimilarPayload:
        if (self.record is None) == (self.text is None):
            raise ValueError("give exactly one of record or text")
        return self


class HubSyncPayload(Payload):
    """Read every configured hub folder and store its catalog for search."""


#: The youngest leftovers `nlphub.cleanup` may remove, in seconds (a tenant may enqueue it):
#: docs/decisions.md, "Maintenance tasks a tenant may enqueue".
MIN_CLEANUP_AGE = 3600.0
#: The most jobs one `nlphub.reconcile_outbox` run republishes (per kind: lost, workerless).
MAX_RECONCILE_LIMIT = 1000


class CleanupPayload(Payload):
    """Remove leftovers of interrupted work (partial downloads, temp and staging folders)
    at least `older_than` seconds old (MIN_CLEANUP_AGE at least: a tenant may enqueue it)."""

    older_than: float = Field(default=86400.0, ge=MIN_CLEANUP_AGE, le=365 * 86400)


class ReconcileOutboxPayload(Payload):
    """Republish jobs that were committed but never reached (or were lost by) the broker;
    at most `limit` of each kind per run (bounded: a tenant may enqueue it)."""

    limit: int = Field(default=MAX_RECONCILE_LIMIT, ge=1, le=MAX_RECONCILE_LIMIT)


class AuditAnchorPayload(Payload):
    """Append the audit chain's head to the anchor file outside the database."""


class AuditVerifyPayload(Payload):
    """Check the audit chain and its anchors; record the outcome."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    payload: type[Payload]
    queue: str
    #: Safe to run twice: acks_late + reject_on_worker_lost (redelivered if the worker dies).
    idempotent: bool = True


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("nlphub.ping", PingPayload, "default"),
        TaskSpec("nlphub.inventory", InventoryPayload, "default"),
        TaskSpec("nlphub.delete", DeletePayload, "default"),
        TaskSpec("nlphub.reconcile_outbox", ReconcileOutboxPayload, "default"),
        TaskSpec("nlphub.cleanup", CleanupPayload, "default"),
        TaskSpec("nlphub.audit_anchor", AuditAnchorPayload, "default"),
        TaskSpec("nlphub.audit_verify", AuditVerifyPayload, "default"),
        TaskSpec("nlphub.download", DownloadPayload, "downloads"),
        TaskSpec("nlphub.fetch_dependencies", ResourcePayload, "default"),
        TaskSpec("nlphub.hub_sync", HubSyncPayload, "default"),
        TaskSpec("nlphub.validate_upload", UploadPayload, "default"),
        TaskSpec("nlphub.check_updates", CheckUpdatesPayload, "default"),
        TaskSpec("nlphub.redeploy_preannotation", RedeployPayload, "default"),
        TaskSpec("nlphub.rules_import", RulesImportPayload, "default"),
        TaskSpec("nlphub.rule_save", RuleSavePayload, "default"),
        TaskSpec("nlphub.rule_delete", RuleNamePayload, "default"),
        TaskSpec("nlphub.rules_export", RulesExportPayload, "default"),
        TaskSpec("nlphub.compute_embeddings", ComputeEmbeddingsPayload, "embeddings"),
        TaskSpec("nlphub.embed_records", EmbedRecordsPayload, "embeddings"),
        TaskSpec("nlphub.similar", SimilarPayload, "embeddings"),
        TaskSpec("nlphub.apply_update", UpdateDecisionPayload, "default"),
        TaskSpec("nlphub.dismiss_update", UpdateDecisionPayload, "default"),
    )
}


#: Problems a PayloadError's message lists (the rest are counted): the message goes into the
#: job row, the audit log and a log line.
MAX_SHOWN_PROBLEMS = 10
#: Characters a problem shows of what a caller chose: a field's name (any key may be sent, one
#: part of a nested name each) and a validator's message (which may quote the input).
MAX_FIELD_CHARS = 64
MAX_MESSAGE_CHARS = 300


def shown(text: str, limit: int) -> str:
    """Caller-given `text` as a message shows it: non-printable characters escaped (one line,
    nothing forged), at most `limit` characters (cut with `…`)."""
    head = text[: limit + 1]
    if not head.isprintable():
        head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return head if len(head) <= limit and len(text) <= limit else head[: limit - 1] + "…"


class PayloadError(ValueError):
    """A payload that does not match its task's schema; the message names the bad fields, the
    first MAX_SHOWN_PROBLEMS of them (`problems` holds them all)."""

    def __init__(self, task: str, problems: list[str]) -> None:
        self.task = task
        self.problems = problems
        listed = problems[:MAX_SHOWN_PROBLEMS]
        if len(problems) > MAX_SHOWN_PROBLEMS:
            listed.append(f"and {len(problems) - MAX_SHOWN_PROBLEMS:,} more")
        super().__init__(f"invalid payload for {shown(task, 128)}: " + "; ".join(listed))


def spec_for(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise PayloadError(
            task, [f"unknown task {shown(task, 128)!r} (known: {', '.join(TASKS)})"]
        ) from None


def validate_payload(task: str, data: Any) -> Payload:
    spec = spec_for(task)
    if not isinstance(data, dict):
        raise PayloadError(task, [f"payload must be a JSON object, got {type(data).__name__}"])
    try:
        return spec.payload.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(shown(str(p), MAX_FIELD_CHARS) for p in err["loc"]) or "payload"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(f"{field}: {shown(msg, MAX_MESSAGE_CHARS)}")
        raise PayloadError(task, problems) from None


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: spec.payload.model_json_schema() for name, spec in TASKS.items()}
