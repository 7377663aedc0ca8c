"""nlphub settings: environment variables and `.env`, validated once at start-up.

Every setting has an environment variable; a missing or malformed one fails with one line that
names it (`SettingsError`). Secrets are `SecretStr`, so they never show up in a repr or a log.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Where `nlphub up` records the URLs of the embedded servers it started, relative to NLPHUB_HOME.
RUNTIME_FILE = "run/embedded.json"

#: The NLP libraries whose installed versions decide compatibility (setting → PyPI distribution).
LIBRARY_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "spark-nlp": ("spark-nlp",),
    "healthcare-nlp": ("spark-nlp-jsl",),
    "visual-nlp": ("spark-ocr",),
    "finance-nlp": ("spark-nlp-jsl",),
    "legal-nlp": ("spark-nlp-jsl",),
    "spark": ("pyspark",),
}


#: The shortest NLPHUB_STUCK_AFTER accepted: several of a running job's progress intervals
#: (0.5 s), with room for the clock of the reconciler's host against the database's.
MIN_STUCK_AFTER = 3
DEFAULT_STUCK_AFTER = 180


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message is one line naming it."""


def _installed_version(distributions: tuple[str, ...]) -> str | None:
    for dist in distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "nlphub"


class Settings(BaseSettings):
    """All of nlphub's configuration. See README's configuration table."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    home: Path = Field(default_factory=_default_home, validation_alias="NLPHUB_HOME")
    hub_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https://s3.amazonaws.com/auxdata.johnsnowlabs.com/public/models"],
        validation_alias="NLPHUB_HUB_URLS",
    )
    licensed_hub_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="NLPHUB_LICENSED_HUB_URLS"
    )
    license_file: Path | None = Field(default=None, validation_alias="NLPHUB_LICENSE_FILE")
    hub_timeout: float = Field(default=60.0, gt=0, validation_alias="NLPHUB_HUB_TIMEOUT")
    library_versions: Annotated[dict[str, str | None], NoDecode] = Field(
        default_factory=dict, validation_alias="NLPHUB_LIBRARY_VERSIONS"
    )
    flower_user: str = Field(default="admin", validation_alias="NLPHUB_FLOWER_USER")
    flower_password: SecretStr | None = Field(
        default=None, validation_alias="NLPHUB_FLOWER_PASSWORD"
    )
    flower_tenants: SecretStr | None = Field(default=None, validation_alias="NLPHUB_FLOWER_TENANTS")
    """Flower accounts for other apps, ``user:password[,user:password...]``: they may enqueue
    and read a job's state through the REST API, nothing else; NLPHUB_FLOWER_USER is the
    operator, who sees and controls everything (`workers.flower`)."""
    flower_address: str = Field(default="127.0.0.1", validation_alias="NLPHUB_FLOWER_ADDRESS")
    flower_port: int = Field(default=5555, ge=1, le=65535, validation_alias="NLPHUB_FLOWER_PORT")
    caller_key: SecretStr | None = Field(default=None, validation_alias="NLPHUB_CALLER_KEY")
    """Key with which Flower signs the caller it puts into a message (its authenticated user)
    and workers check it; default a generated one in ``NLPHUB_HOME/run/caller-key``.
    Flower and the workers must share it. `nlphub.callers`."""
    visibility_timeout: int = Field(
        default=6 * 3600, ge=10, validation_alias="NLPHUB_VISIBILITY_TIMEOUT"
    )
    task_time_limit: int | None = Field(
        default=None, ge=5, validation_alias="NLPHUB_TASK_TIME_LIMIT"
    )
    outbox_grace_seconds: int = Field(default=30, ge=1, validation_alias="NLPHUB_OUTBOX_GRACE")
    outbox_republish_after: int = Field(
        default=900, ge=10, validation_alias="NLPHUB_OUTBOX_REPUBLISH_AFTER"
    )
    stuck_after_seconds: int = Field(
        default=DEFAULT_STUCK_AFTER, validation_alias="NLPHUB_STUCK_AFTER"
    )
    """Seconds before a `started`/`received` job whose run lock is free (its worker's database
    session is gone) is published again by the reconciler: at least `MIN_STUCK_AFTER`, below
    NLPHUB_VISIBILITY_TIMEOUT (`_check_stuck_after`)."""
    worker_concurrency: int = Field(default=2, ge=1, le=64, validation_alias="NLPHUB_CONCURRENCY")
    log_level: str = Field(default="INFO", validation_alias="NLPHUB_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias="NLPHUB_LOG_FORMAT"
    )
    """`text`: one line per record; `json`: one JSON object per line (time, level, role, logger,
    message, and job_id / task in a job), for log shippers. `workers.logs`."""
    log_role: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.@-]{1,64}$", validation_alias="NLPHUB_LOG_ROLE"
    )
    """The process role in each log record (`worker-default`, `beat`, …): `nlphub up` sets it
    for each process it starts; default the command (`worker-QUEUES`, `beat`, `flower`)."""
    log_max_bytes: int = Field(
        default=10 * 1024**2, ge=64 * 1024, validation_alias="NLPHUB_LOG_MAX_BYTES"
    )
    """Size at which `nlphub up` rotates a process' file under ``NLPHUB_HOME/logs``."""
    log_backups: int = Field(default=5, ge=1, le=100, validation_alias="NLPHUB_LOG_BACKUPS")
    """Rotated files kept per process (``worker-default.log.1`` … ``.N``)."""
    update_webhook: str | None = Field(default=None, validation_alias="NLPHUB_UPDATE_WEBHOOK")
    update_check_crontab: str = Field(
        default="0 3 * * *", validation_alias="NLPHUB_UPDATE_CHECK_CRONTAB"
    )
    heartbeat_seconds: float = Field(default=60.0, gt=0, validation_alias="NLPHUB_HEARTBEAT")
    redeploy_debounce_seconds: float = Field(
        default=30.0, ge=0, validation_alias="NLPHUB_REDEPLOY_DEBOUNCE"
    )
    retry_backoff_seconds: float = Field(
        default=2.0, gt=0, le=3600, validation_alias="NLPHUB_RETRY_BACKOFF"
    )
    retry_backoff_max_seconds: float = Field(
        default=300.0, gt=0, le=86400, validation_alias="NLPHUB_RETRY_BACKOFF_MAX"
    )
    audit_lock_timeout: float = Field(
        default=5.0, ge=0, le=600, validation_alias="NLPHUB_AUDIT_LOCK_TIMEOUT"
    )
    """Seconds a statement that writes audit events waits for a lock (the audit chain's lock,
    held by a transaction from its first audit event to its commit, above all) before it fails
    as a temporary error, retried; 0 waits forever. `nlphub.audit.lock_timeout`."""
    audit_details_max_bytes: int = Field(
        default=16 * 1024, ge=1024, le=2**24, validation_alias="NLPHUB_AUDIT_DETAILS_MAX_BYTES"
    )
    """Most bytes an audit event's details may have (serialized): larger details are stored as
    a marker (`truncated`, `bytes`, `sha256`, a `preview`). `nlphub.audit.bounded_details`."""
    audit_anchor_dir: Path | None = Field(default=None, validation_alias="NLPHUB_AUDIT_ANCHOR_DIR")
    """Folder (outside the database) where `nlphub audit anchor` and beat append the audit
    chain's head; default ``NLPHUB_HOME/audit-anchors``. `nlphub.anchors`."""
    audit_anchor_interval: float = Field(
        default=3600.0, ge=10, validation_alias="NLPHUB_AUDIT_ANCHOR_INTERVAL"
    )
    """Seconds between the audit chain anchors that beat writes (`nlphub.audit_anchor`)."""
    audit_verify_interval: float = Field(
        default=86400.0, ge=60, validation_alias="NLPHUB_AUDIT_VERIFY_INTERVAL"
    )
    """Seconds between beat's checks of the audit log (`nlphub.audit_verify`); the audit
    alert calls a check older than twice this stale."""

    # -- metrics --
    metrics_address: str = Field(default="127.0.0.1", validation_alias="NLPHUB_METRICS_ADDRESS")
    """Where `nlphub metrics serve` (started by `nlphub up`) listens."""
    metrics_port: int = Field(default=9808, ge=1, le=65535, validation_alias="NLPHUB_METRICS_PORT")

    # -- security: hub input --
    max_download_bytes: int = Field(
        default=50 * 1024**3, ge=1, validation_alias="NLPHUB_MAX_DOWNLOAD_BYTES"
    )
    """Most bytes a hub archive whose size the hub does not declare may have (50 GiB)."""
    max_upload_bytes: int = Field(
        default=24 * 1024**3, ge=1, validation_alias="NLPHUB_MAX_UPLOAD_BYTES"
    )
    """Most bytes an uploaded zip file may have (24 GiB: the 20 GiB unpacked limit and room for
    the zip's own headers); a larger one is refused before it is read."""

    @field_validator("hub_urls", "licensed_hub_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.replace(",", " ").split() if part.strip()]
        return value

    @field_validator("hub_urls", "licensed_hub_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for item in value:
            # an optional "edition=" prefix names a licensed folder's edition
            url = item.split("=", 1)[1] if "=" in item.split("://", 1)[0] else item
            if not url.startswith(("http://", "https://", "file://")):
                raise ValueError(f"{item!r} is not an http(s):// or file:// URL")
        return [url.rstrip("/") for url in value]

    @field_validator("library_versions", mode="before")
    @classmethod
    def _parse_versions(cls, value: Any) -> Any:
        # "spark-nlp=5.4.1,healthcare-nlp=5.4.0" or a JSON object
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = {}
            for item in filter(None, (p.strip() for p in text.split(","))):
                lib, sep, version = item.partition("=")
                if not sep or not lib.strip():
                    raise ValueError(f"{item!r} is not LIBRARY=VERSION")
                pairs[lib.strip()] = version.strip() or None
            return pairs
        return value

    @field_validator("library_versions")
    @classmethod
    def _check_libraries(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(value) - set(LIBRARY_DISTRIBUTIONS))
        if unknown:
            raise ValueError(
                f"unknown library {unknown[0]!r} (known: {', '.join(LIBRARY_DISTRIBUTIONS)})"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "redis+socket://")):
            raise ValueError("must be a redis://, rediss:// or redis+socket:// URL")
        return value

    @field_validator("caller_key", mode="before")
    @classmethod
    def _check_caller_key(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str):
            if not text.strip():
                return None  # empty: the generated key
            if len(text.strip()) < 16:
                raise ValueError("must be at least 16 characters, e.g. `openssl rand -hex 32`")
            return text.strip()
        return value

    @field_validator("flower_tenants", mode="before")
    @classmethod
    def _check_flower_tenants(cls, value: Any, info: ValidationInfo) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            return value
        if not text.strip():
            return None
        accounts = [a.strip() for a in text.split(",")]
        for account in accounts:
            user, colon, password = account.partition(":")
            if not colon or not user or not password:
                raise ValueError("must be user:password pairs separated by commas")
            if user == info.data.get("flower_user"):
                raise ValueError(f"{user!r} is NLPHUB_FLOWER_USER, the operator: not a tenant")
        return ",".join(accounts)

    @field_validator("stuck_after_seconds")
    @classmethod
    def _check_stuck_after(cls, value: int, info: ValidationInfo) -> int:
        """Above the time a running worker may go without touching its job, and below the
        visibility timeout: past it Redis delivers the job again anyway, so the reconciler
        would never be the one to rescue it (see docs/decisions.md, NLPHUB_STUCK_AFTER's
        bounds)."""
        if value < MIN_STUCK_AFTER:
            raise ValueError(
                f"must be a positive number of seconds, at least {MIN_STUCK_AFTER} (got {value})"
            )
        visibility = info.data.get("visibility_timeout")
        if visibility is not None and value >= visibility:
            raise ValueError(
                f"must be below NLPHUB_VISIBILITY_TIMEOUT ({visibility} s), or Redis delivers "
                f"a stuck job again before the reconciler would (it is {value}, default "
                f"{DEFAULT_STUCK_AFTER}); lower it or raise NLPHUB_VISIBILITY_TIMEOUT"
            )
        return value

    @field_validator("update_check_crontab")
    @classmethod
    def _check_crontab(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a 5-field crontab, e.g. '0 3 * * *'")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    # -- security: credentials --
    credentials: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict, validation_alias="NLPHUB_CREDENTIALS"
    )
    """The API keys a payload's `api_key_ref` may name, each bound to the endpoints it may be
    sent to: a JSON object, credential name → {"env": "<variable holding the key>",
    "base_urls": ["https://…", …], "allow_http": false}. The policy is `nlphub.credentials`."""

    @field_validator("credentials", mode="before")
    @classmethod
    def _parse_credentials(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(
                    'must be a JSON object: {"NAME": {"env": "VARIABLE", '
                    '"base_urls": ["https://…"], "allow_http": false}}'
                ) from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object of credential name → credential")
        return value

    @field_validator("credentials")
    @classmethod
    def _check_credentials(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        import re
        from urllib.parse import urlsplit

        own = {
            str(field.validation_alias)
            for field in cls.model_fields.values()
            if isinstance(field.validation_alias, str)
        }
        checked: dict[str, dict[str, Any]] = {}
        for name, spec in value.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,127}", name):
                raise ValueError(
                    f"credential name {name[:40]!r} must be a letter then up to 127 letters, "
                    "digits, '_', '.' or '-'"
                )
            unknown = sorted(set(spec) - {"env", "base_urls", "allow_http"})
            if unknown:
                raise ValueError(
                    f"credential {name!r}: unknown key {unknown[0]!r} "
                    "(known: env, base_urls, allow_http)"
                )
            env = spec.get("env")
            if not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", env):
                raise ValueError(f"credential {name!r}: env must name an environment variable")
            if env in own:
                raise ValueError(
                    f"credential {name!r}: env {env} is one of nlphub's own settings, not an "
                    "API key"
                )
            allow_http = spec.get("allow_http", False)
            if not isinstance(allow_http, bool):
                raise ValueError(f"credential {name!r}: allow_http must be true or false")
            urls = spec.get("base_urls")
            if not isinstance(urls, list) or not urls:
                raise ValueError(
                    f"credential {name!r}: base_urls must be a non-empty list of the endpoints "
                    "its key may be sent to"
                )
            for url in urls:
                try:
                    parts = urlsplit(url) if isinstance(url, str) else None
                    port_ok = parts is not None and (parts.port or 0) >= 0
                except ValueError:
                    parts, port_ok = None, False
                if (
                    parts is None
                    or not port_ok
                    or parts.scheme not in ("http", "https")
                    or not parts.hostname
                ):
                    raise ValueError(
                        f"credential {name!r}: base_urls must be http(s)://host[:port][/path] URLs"
                    )
                if parts.username is not None or parts.password is not None:
                    raise ValueError(f"credential {name!r}: a base_url carries a user or password")
                if parts.query or parts.fragment:
                    raise ValueError(f"credential {name!r}: a base_url has a query or fragment")
                if parts.scheme == "http" and not allow_http:
                    raise ValueError(
                        f"credential {name!r}: base_url {url} is plain http; use https, or set "
                        '"allow_http": true for this credential'
                    )
            checked[name] = {"env": env, "base_urls": list(urls), "allow_http": allow_http}
        return checked

    # -- derived values ------------------------------------------------------------------------

    @property
    def resources_dir(self) -> Path:
        return self.home / "resources"

    @property
    def logs_dir(self) -> Path:
        """Where `nlphub up` keeps one rotated log file per process (`nlphub logs`)."""
        return self.home / "logs"

    @property
    def effective_time_limit(self) -> int:
        """Hard time limit of any task: always shorter than the visibility timeout."""
        limit = self.task_time_limit or self.visibility_timeout - max(
            5, self.visibility_timeout // 10
        )
        return min(limit, self.visibility_timeout - 5)

    def library_version(self, library: str) -> str | None:
        """Installed version of an NLP library: the setting wins, else the installed package."""
        if library in self.library_versions:
            return self.library_versions[library]
        return _installed_version(LIBRARY_DISTRIBUTIONS.get(library, (library,)))

    def runtime_urls(self) -> dict[str, str]:
        """URLs of embedded servers started by a running `nlphub up`, if any."""
        path = self.home / RUNTIME_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def runtime_settings(self) -> dict[str, str]:
        """Environment settings a running `nlphub up` gave its processes (RUNTIME_FILE)."""
        path = self.home / RUNTIME_FILE
        try:
            data = json.loads(path.read_text()).get("settings", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return {k: v for k, v in data.items() if k.startswith("NLPHUB_") and isinstance(v, str)}

    def require_database_url(self) -> str:
        url = self.database_url or self.runtime_urls().get("database_url")
        if not url:
            raise SettingsError(
                "DATABASE_URL is not set (and no `nlphub up` is running under "
                f"NLPHUB_HOME={self.home}): set it, or start the stack with `nlphub up`"
            )
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    def require_redis_url(self) -> str:
        url = self.redis_url or self.runtime_urls().get("redis_url")
        if not url:
            raise SettingsError(
                "REDIS_URL is not set (and no `nlphub up` is running under "
                f"NLPHUB_HOME={self.home}): set it, or start the stack with `nlphub up`"
            )
        return url

    # -- security: paths and uploads --
    incoming_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias="NLPHUB_INCOMING_ROOTS"
    )
    """Folders that paths in payloads (uploads, rules files) may be read from: absolute paths,
    separated by commas or the OS path separator (``:``); default ``NLPHUB_HOME/incoming``."""
    export_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias="NLPHUB_EXPORT_ROOTS"
    )
    """Folders that rules exports may be written into; default ``NLPHUB_HOME/exports``."""

    @field_validator("incoming_roots", "export_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.replace(os.pathsep, ",").split(",")
            value = [part.strip() for part in parts if part.strip()]
        return value

    @field_validator("incoming_roots", "export_roots")
    @classmethod
    def _check_roots(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"{str(root)!r} is not an absolute path")
        return [Path(os.path.normpath(root)) for root in value]

    @model_validator(mode="after")
    def _default_roots(self) -> Settings:
        if not self.incoming_roots:
            self.incoming_roots = [self.home / "incoming"]
        if not self.export_roots:
            self.export_roots = [self.home / "exports"]
        return self


def _first_error_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = str(err["loc"][0]) if err.get("loc") else "settings"
    env = Settings.model_fields[loc].validation_alias if loc in Settings.model_fields else loc
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"setting {env} is invalid: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise `SettingsError` with one line naming a bad setting.

    Settings that a running `nlphub up` chose for its processes (e.g. the demo hub with
    `--demo`) apply to other commands too, unless the environment sets them."""
    try:
        settings = Settings(**overrides)
        chosen = settings.runtime_settings()
        extra: dict[str, Any] = {
            k: v for k, v in chosen.items() if k not in os.environ and k not in overrides
        }
        return Settings(**overrides, **extra) if extra else settings
    except ValidationError as exc:
        raise SettingsError(_first_error_line(exc)) from None
    except (ValueError, json.JSONDecodeError) as exc:  # e.g. pydantic-settings decode errors
        raise SettingsError(f"settings are invalid: {exc}".splitlines()[0]) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return load_settings()
