"""Domain errors. Their messages are shown to users as they are: say what and why."""

from __future__ import annotations


class NlphubError(Exception):
    """A failure a user can act on; the message names the problem."""


class TemporaryError(NlphubError):
    """May go away by itself (a server down, a lock held): the task retries with backoff."""


class NotFound(NlphubError):
    """The thing asked for does not exist."""


class Refused(NlphubError):
    """The request is understood but not allowed in the current state."""


class GaveUp(NlphubError):
    """A temporary error that did not go away within the retry budget."""
