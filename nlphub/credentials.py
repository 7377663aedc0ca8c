"""The credential policy: which API key a payload may use, and where that key may be sent.

Callers who enqueue jobs are tenants, so a payload never names an environment variable of the
workers. Its `api_key_ref` names a *credential* the operator declared in `NLPHUB_CREDENTIALS`
(`schemas.settings.Settings.credentials`):

    {"openai": {"env": "OPENAI_API_KEY", "base_urls": ["https://api.openai.com/v1"]},
     "local": {"env": "LOCAL_KEY", "base_urls": ["http://10.0.0.5:8080/v1"], "allow_http": true}}

- An undeclared name is refused, whatever the workers' environment holds (the same refusal
  whether or not a variable of that name exists, so the refusal is no oracle either).
- The key is sent only to the credential's `base_urls`: the endpoint asked for (or, when none
  is, the platform's default) must be one of them, compared as URLs (scheme and host in any
  case, a default port written or not, one trailing slash or none; anything else, a path
  included, must be identical). Plain http is refused unless the credential sets
  `"allow_http": true` (and lists the http URL). No user or password, query or fragment.
- Every check runs before the key is read and before any request is made.
- A refusal (`CredentialRefused`) names the credential and the problem; never the key, the
  variable holding it, the credential's endpoints, or any other credential.

`endpoint` checks a request when an embedding is created (its endpoint is then stored, and
every later use — `nlphub.embed_records`, query embedding for search, a redelivered compute —
uses that stored endpoint, never one from a later payload); `resolve` checks again (the
operator may have changed the policy since) and reads the key. The key is held in `Grant`,
whose repr hides it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nlphub.errors import Refused
from schemas.settings import Settings

log = logging.getLogger(__name__)

#: The setting that declares credentials (named in refusals: it is documentation, not state).
SETTING = "NLPHUB_CREDENTIALS"

_DEFAULT_PORTS = {"http": 80, "https": 443}


class CredentialRefused(Refused):
    """A key reference or an endpoint the policy does not allow; nothing was sent."""


@dataclass(frozen=True)
class Credential:
    """One declared credential: the variable holding its key, and where the key may go."""

    name: str
    env: str
    base_urls: frozenset[str]
    allow_http: bool = False


@dataclass(frozen=True)
class Grant:
    """A key the policy allowed, and the one endpoint it may be sent to."""

    credential: str
    base_url: str
    key: str = field(repr=False)


def normalize_url(url: str) -> str:
    """`url` in the form endpoints are compared in; raises `CredentialRefused` for a URL that
    is not a plain ``http(s)://host[:port][/path]``. The message never echoes a password."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise CredentialRefused("base_url is not a valid http(s) URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise CredentialRefused("base_url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CredentialRefused("base_url must not carry a user name or password")
    if parts.query or parts.fragment:
        raise CredentialRefused("base_url must not have a query or a fragment")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    return f"{scheme}://{netloc}{path}"


def _credential(name: str, spec: Mapping[str, Any]) -> Credential:
    return Credential(
        name=name,
        env=str(spec["env"]),
        base_urls=frozenset(normalize_url(str(url)) for url in spec["base_urls"]),
        allow_http=bool(spec.get("allow_http", False)),
    )


def _describe(ref: str) -> str:
    return repr(ref if len(ref) <= 64 else ref[:64] + "…")


def credential(settings: Settings, ref: str | None, *, platform: str) -> Credential:
    """The credential `ref` names; refused when there is no ref or it names none declared."""
    if not ref:
        raise CredentialRefused(
            f"{platform} needs api_key_ref: the name of a credential the operator declared "
            f"for the workers ({SETTING})"
        )
    spec = settings.credentials.get(ref)
    if spec is None:
        raise CredentialRefused(
            f"api_key_ref {_describe(ref)} is not a declared credential: it must name a "
            f"credential the operator declared for the workers ({SETTING}), not an "
            "environment variable"
        )
    return _credential(ref, spec)


def endpoint(
    settings: Settings,
    ref: str | None,
    *,
    platform: str,
    base_url: str | None,
    default_base_url: str | None,
) -> str:
    """The endpoint a key named by `ref` would be sent to (`base_url`, else the platform's
    default), normalized, once the policy allows it; `CredentialRefused` otherwise. Reads no
    key."""
    cred = credential(settings, ref, platform=platform)
    asked = base_url or default_base_url
    if not asked:
        raise CredentialRefused(
            f"{platform} needs base_url (the endpoint of the resource), one the operator "
            f"allowed for credential {cred.name!r}"
        )
    url = normalize_url(asked)
    if url.startswith("http://") and not cred.allow_http:
        raise CredentialRefused(
            f"credential {cred.name!r} may not be sent over plain http ({url}): use https "
            "(the operator allows http per credential)"
        )
    if url not in cred.base_urls:
        which = "base_url" if base_url else f"{platform}'s default endpoint"
        raise CredentialRefused(
            f"credential {cred.name!r} may not be sent to {url} ({which}): it is not an "
            "endpoint the operator allowed for this credential"
        )
    return url


def resolve(
    settings: Settings,
    ref: str | None,
    *,
    platform: str,
    base_url: str | None,
    default_base_url: str | None,
) -> Grant:
    """The key of credential `ref` and the endpoint it may be sent to (checked as `endpoint`
    does, before the key is read); `CredentialRefused` otherwise."""
    url = endpoint(
        settings, ref, platform=platform, base_url=base_url, default_base_url=default_base_url
    )
    assert ref is not None  # `endpoint` refused a missing ref
    cred = credential(settings, ref, platform=platform)
    key = _read_key(cred.env)
    if not key:
        # The operator's log names the variable; the tenant's refusal does not.
        log.warning("credential %r: its environment variable %s is not set", cred.name, cred.env)
        raise CredentialRefused(
            f"credential {cred.name!r} has no key on the workers: ask the operator to set it"
        )
    return Grant(credential=cred.name, base_url=url, key=key)


def _read_key(env: str) -> str | None:
    """The value of the variable holding a credential's key (read only once allowed)."""
    return os.environ.get(env)
