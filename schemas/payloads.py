"""Task payloads: the stable contract for apps that enqueue nlphub jobs.

Each task name (e.g. `nlphub.inventory`) has one pydantic model here; its JSON schema is what
other apps validate against (`nlphub tasks schema`). Secrets are never payload fields: a payload
names a secret (`*_ref`) and the worker reads it from its settings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.embedding_platforms import Platform


class Payload(BaseModel):
    """Common fields of every payload."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    requested_by: str = Field(default="system", min_length=1, max_length=255)


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
    labels: list[str] | None = None
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
    confirmed_by: str = Field(min_length=1, max_length=255)


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


class RuleNamePayload(Payload):
    name: str = Field(min_length=1, max_length=128)


class RulesExportPayload(Payload):
    """Export rules (all, or `names`) as a ZIP of one JSON per rule, written to `path`."""

    path: str = Field(min_length=1, max_length=4096)
    names: list[str] | None = None


class ComputeEmbeddingsPayload(Payload):
    """Embed a dataset's text attribute. An HTTP platform's key is named, never given:
    `api_key_ref` names a credential the operator declared (`NLPHUB_CREDENTIALS`), and
    `base_url` (else the platform's default) must be one of that credential's endpoints."""

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


class EmbedRecordsPayload(Payload):
    """Embed new or edited records with an embedding's stored model, reducer, credential and
    endpoint. `base_url` is accepted for compatibility and ignored: the key goes only to the
    endpoint stored with the embedding."""

    embedding_id: uuid.UUID
    records: list[str] = Field(min_length=1, max_length=100_000)
    base_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")


class SimilarPayload(Payload):
    """Nearest records to a record or a query text (cosine, attribute-level vectors)."""

    dataset: str = Field(min_length=1, max_length=255)
    record: str | None = None
    text: str | None = Field(default=None, max_length=100_000)
    k: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_query(self) -> SimilarPayload:
        if (self.record is None) == (self.text is None):
            raise ValueError("give exactly one of record or text")
        return self


class HubSyncPayload(Payload):
    """Read every configured hub folder and store its catalog for search."""


class CleanupPayload(Payload):
    """Remove leftovers of interrupted work (partial downloads, temp and staging folders)."""

    older_than: float = Field(default=86400.0, ge=0, le=365 * 86400)


class ReconcileOutboxPayload(Payload):
    """Republish jobs that were committed but never reached (or were lost by) the broker."""

    limit: int = Field(default=1000, ge=1, le=100_000)


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


class PayloadError(ValueError):
    """A payload that does not match its task's schema; the message names the bad fields."""

    def __init__(self, task: str, problems: list[str]) -> None:
        self.task = task
        self.problems = problems
        super().__init__(f"invalid payload for {task}: " + "; ".join(problems))


def spec_for(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise PayloadError(task, [f"unknown task {task!r} (known: {', '.join(TASKS)})"]) from None


def validate_payload(task: str, data: Any) -> Payload:
    spec = spec_for(task)
    if not isinstance(data, dict):
        raise PayloadError(task, [f"payload must be a JSON object, got {type(data).__name__}"])
    try:
        return spec.payload.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "payload"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(f"{field}: {msg}")
        raise PayloadError(task, problems) from None


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: spec.payload.model_json_schema() for name, spec in TASKS.items()}
