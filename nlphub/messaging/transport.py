"""The Redis broker transport: kombu's, made safe to close after the connection was lost.

When Redis goes away, Celery's worker first *collects* the broken connection (which drops the
transport's reference to its connection settings) and then closes it. Closing the channel
restores the messages the worker had fetched but not acknowledged, which needs a Redis client,
which kombu builds from those settings: `AttributeError: 'NoneType' object has no attribute
'hostname'` — not a connection error, so the worker died ("Unrecoverable error") instead of
reconnecting, leaving its pool processes running without a parent.

Here that case raises a connection error, which Celery ignores while closing. The messages stay
in Redis's unacknowledged set, restored after the visibility timeout (and each job's row makes a
redelivery harmless). `install()` (run when the Celery app is defined) makes it the transport of
redis://, rediss:// and redis+socket:// URLs, so URLs, Flower and logs look as before.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
import redis.exceptions
from kombu.transport import redis as kombu_redis

TRANSPORT = "nlphub.messaging.transport:Transport"


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(
                "the broker connection was closed after a connection loss"
            )
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Resolve the `redis` and `rediss` transport names (kombu's alias table) to `Transport`."""
    for name in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[name] = TRANSPORT
        kombu.transport._transport_cache.pop(name, None)  # resolved before: resolve again
