"""Postgres tables (SQLModel). Alembic (`schemas/migrations`) owns the schema."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from schemas.editions import OPEN_SOURCE
from schemas.states import JobState, ResourceState, check_job_transition, check_resource_transition


class TextEnum(TypeDecorator[StrEnum]):
    """A StrEnum stored as text: rows load as the enum, not as bare strings."""

    impl = Text
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Any) -> StrEnum | None:
        return None if value is None else self.enum(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False) -> Any:
    return Field(
        default_factory=utcnow if not nullable else None,
        sa_type=DateTime(timezone=True),
        nullable=nullable,
    )


class ResourceKind(StrEnum):
    MODEL = "model"
    EMBEDDINGS = "embeddings"
    PIPELINE = "pipeline"
    RULES = "rules"


class EmbeddingType(StrEnum):
    WORD = "word"
    SENTENCE = "sentence"
    DOCUMENT = "document"


class ResourceSource(StrEnum):
    HUB = "hub"
    UPLOAD = "upload"
    DEFAULT = "default"
    TRAINED = "trained"


class ResourceBase(SQLModel):
    name: str = Field(max_length=255, index=True)
    language: str = Field(default="en", max_length=16)
    version: str = Field(default="", max_length=64)
    kind: ResourceKind = Field(sa_type=TextEnum(ResourceKind))
    embedding_type: EmbeddingType | None = Field(default=None, sa_type=TextEnum(EmbeddingType))
    edition: str = Field(default=OPEN_SOURCE, max_length=64)
    source: ResourceSource = Field(default=ResourceSource.HUB, sa_type=TextEnum(ResourceSource))
    lib_version: str | None = Field(default=None, max_length=64)
    spark_version: str | None = Field(default=None, max_length=64)
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    labels: list[str] = Field(default_factory=list, sa_type=JSONB)
    dependencies: list[str] = Field(default_factory=list, sa_type=JSONB)


class Resource(ResourceBase, table=True):
    """A model, embeddings, pipeline or rules resource, wherever it came from."""

    __tablename__ = "resource"
    __table_args__ = (UniqueConstraint("name", "language", "version", name="uq_resource_nlv"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    state: ResourceState = Field(
        default=ResourceState.AVAILABLE, sa_type=TextEnum(ResourceState), index=True
    )
    bytes_on_disk: int | None = Field(default=None, sa_type=BigInteger)
    checksum: str | None = Field(default=None, max_length=128)
    install_path: str | None = Field(default=None)
    error: str | None = Field(default=None, sa_type=Text)
    #: The job working on it now (download, validation…); one job per resource at a time.
    job_id: uuid.UUID | None = Field(default=None)
    #: Where its archive came from (hub archive URL or upload path) and the hub's MD5.
    source_url: str | None = Field(default=None, sa_type=Text)
    archive_md5: str | None = Field(default=None, max_length=32)
    hub_time: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    installed_at: datetime | None = _ts(nullable=True)

    def move_to(self, new_state: ResourceState, *, error: str | None = None) -> ResourceState:
        """Change state through the state machine; returns the previous state."""
        old = self.state
        if old != new_state:
            check_resource_transition(old, new_state)
        self.state = new_state
        self.error = error
        self.updated_at = utcnow()
        if new_state == ResourceState.INSTALLED:
            self.installed_at = self.updated_at
        return old

    @property
    def label(self) -> str:
        return f"{self.name}/{self.language}/{self.version or '-'}"


class Job(SQLModel, table=True):
    """One row per enqueued job. `id` is the Celery task id."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_state_created", "state", "created_at"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    task: str = Field(max_length=128)
    queue: str = Field(max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    #: SHA-256 of the payload as enqueued, unredacted (`nlphub.jobstate.payload_digest`); None
    #: on rows from before migration 0009.
    payload_sha256: str | None = Field(default=None, max_length=64)
    state: JobState = Field(default=JobState.QUEUED, sa_type=TextEnum(JobState))
    progress: float = Field(default=0.0)
    progress_message: str | None = Field(default=None, sa_type=Text)
    attempts: int = Field(default=0)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    error: str | None = Field(default=None, sa_type=Text)
    requested_by: str = Field(default="system", max_length=255)
    worker: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    published_at: datetime | None = _ts(nullable=True)
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)

    def move_to(self, new_state: JobState) -> JobState:
        old = self.state
        check_job_transition(old, new_state)
        self.state = new_state
        self.updated_at = utcnow()
        return old


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained record of every action (a trigger refuses UPDATE/DELETE)."""

    __tablename__ = "audit_event"

    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    at: datetime = _ts()
    actor: str = Field(max_length=255)
    action: str = Field(max_length=128, index=True)
    target: str | None = Field(default=None, max_length=512)
    job_id: uuid.UUID | None = Field(default=None, index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class HubEntryRow(SQLModel, table=True):
    """One line of a hub folder's metadata.json, synced so that search is a query."""

    __tablename__ = "hub_entry"
    __table_args__ = (
        UniqueConstraint("archive_url", name="uq_hub_entry_archive"),
        Index("ix_hub_entry_name_lang", "name", "language"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    folder_url: str = Field(sa_type=Text)
    archive_url: str = Field(sa_type=Text)
    name: str = Field(max_length=255)
    language: str = Field(max_length=16)
    lib_version: str | None = Field(default=None, max_length=64)
    spark_version: str | None = Field(default=None, max_length=64)
    edition: str = Field(max_length=64)
    kind: ResourceKind = Field(sa_type=TextEnum(ResourceKind))
    embedding_type: EmbeddingType | None = Field(default=None, sa_type=TextEnum(EmbeddingType))
    annotator: str | None = Field(default=None, max_length=255)
    category: str | None = Field(default=None, max_length=8)
    engine: str | None = Field(default=None, max_length=64)
    ready_to_use: bool = True
    time: datetime = _ts()
    checksum: str | None = Field(default=None, max_length=32)
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    synced_at: datetime = _ts()


class UpdateNotice(SQLModel, table=True):
    """A newer compatible version of an installed resource, waiting for a decision."""

    __tablename__ = "update_notice"
    __table_args__ = (
        UniqueConstraint("resource_id", "new_version", name="uq_update_notice_version"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    resource_id: uuid.UUID = Field(index=True)
    name: str = Field(max_length=255)
    language: str = Field(max_length=16)
    current_version: str = Field(max_length=64)
    new_version: str = Field(max_length=64)
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    edition: str = Field(max_length=64)
    archive_url: str = Field(sa_type=Text)
    #: pending → applying → applied | failed; pending → dismissed
    state: str = Field(default="pending", max_length=16, index=True)
    decided_by: str | None = Field(default=None, max_length=255)
    decided_at: datetime | None = _ts(nullable=True)
    job_id: uuid.UUID | None = Field(default=None)
    found_at: datetime = _ts()


class Rule(SQLModel, table=True):
    """A ContextualParser rule (regex or dictionary) for pre-annotation."""

    __tablename__ = "rule"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    type: str = Field(max_length=16)
    entity: str = Field(max_length=64)
    regex: str | None = Field(default=None, sa_type=Text)
    dictionary: list[str] | None = Field(default=None, sa_type=JSONB)
    description: str = Field(default="", sa_type=Text)
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    version: int = Field(default=1)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class PreannotationServer(SQLModel, table=True):
    """A pre-annotation server: the models and rules it serves, and its redeploy endpoint."""

    __tablename__ = "preannotation_server"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    url: str = Field(sa_type=Text)
    models: list[str] = Field(default_factory=list, sa_type=JSONB)
    rules: list[str] = Field(default_factory=list, sa_type=JSONB)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Redeploy(SQLModel, table=True):
    """A redeploy a server needs ("Redeploy preannotation server to apply these changes")."""

    __tablename__ = "redeploy"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    server_id: uuid.UUID = Field(index=True)
    #: pending → done | (failed attempts stay pending with last_error)
    state: str = Field(default="pending", max_length=16, index=True)
    reasons: list[str] = Field(default_factory=list, sa_type=JSONB)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_type=Text)
    requested_at: datetime = _ts()
    last_change_at: datetime = _ts()
    done_at: datetime | None = _ts(nullable=True)


class Dataset(SQLModel, table=True):
    """A set of records whose text attributes get embeddings."""

    __tablename__ = "dataset"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255, unique=True)
    created_at: datetime = _ts()


class Record(SQLModel, table=True):
    __tablename__ = "record"
    __table_args__ = (UniqueConstraint("dataset_id", "external_id", name="uq_record_external"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", index=True, ondelete="CASCADE")
    external_id: str = Field(max_length=255)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    updated_at: datetime = _ts()


class Embedding(SQLModel, table=True):
    """One embedding of a dataset's attribute: its configuration, state and fitted reducer."""

    __tablename__ = "embedding"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", index=True, ondelete="CASCADE")
    attribute: str = Field(max_length=255)
    platform: str = Field(max_length=32)
    model: str = Field(max_length=512)
    granularity: str = Field(default="attribute", max_length=16)
    target_dims: int = Field(default=64)
    output_dims: int | None = Field(default=None)
    #: initializing → waiting → encoding → finished | failed; deleted stops a running job
    state: str = Field(default="initializing", max_length=16, index=True)
    progress: float = Field(default=0.0)
    error: str | None = Field(default=None, sa_type=Text)
    #: the credential (`NLPHUB_CREDENTIALS`) an HTTP platform's key comes from, and the endpoint
    #: it was allowed to go to when the embedding was created: every later use sends it there
    api_key_ref: str | None = Field(default=None, max_length=255)
    base_url: str | None = Field(default=None, max_length=2048)
    encoder_state: bytes | None = Field(default=None, sa_type=LargeBinary)
    reducer_state: bytes | None = Field(default=None, sa_type=LargeBinary)
    job_id: uuid.UUID | None = Field(default=None)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class Counter(SQLModel, table=True):
    """A running total that would otherwise take a scan to count (the metrics read it):
    finished jobs per task (`job.succeeded`, `job.failed`, `job.revoked`, kept by
    `nlphub.jobstate`), hub bytes downloaded (`download.bytes`), records embedded per platform
    (`embedding.records`), added to by `nlphub.counters`. Never decreases."""

    __tablename__ = "counter"

    name: str = Field(max_length=64, primary_key=True)
    #: What the total is of (a task, a platform); '' for none.
    label: str = Field(default="", max_length=128, primary_key=True)
    value: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = _ts()


class AuditVerification(SQLModel, table=True):
    """One check of the audit log (`nlphub audit verify`, beat's `nlphub.audit_verify`): when,
    by whom, and what it found."""

    __tablename__ = "audit_verification"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    at: datetime = _ts()
    actor: str = Field(max_length=255)
    ok: bool
    #: Events whose hash verified before the first problem (all of them when ok).
    events: int = Field(default=0, sa_type=BigInteger)
    anchors: int = Field(default=0)
    #: The problems found, one per line (chain break, truncation, rewrite); None when ok.
    problems: str | None = Field(default=None, sa_type=Text)
