"""One error tree for aico. Adapters translate third-party errors into these at the edge."""

from __future__ import annotations


class AicoError(Exception):
    """Base of every error aico raises on purpose."""


CONFIG_ERROR = 2  # the exit code of a process that cannot start with its settings


class ConfigError(AicoError):
    """Settings are missing or invalid; the process cannot start (and exits CONFIG_ERROR)."""


class InvalidInput(AicoError):
    """Input from a user or an operator that aico refuses: the reason is for them to read."""


class Reject(AicoError):
    """A queue message that is done with: dead-letter it, never give it back. Whatever its owner
    needed to be told was published before this was raised (the runtime dead-letters the
    delivery once those publishes are confirmed)."""


class DecodeError(Reject):
    """A queue message that cannot be decoded."""


class Conflict(AicoError):
    """An append lost a race: the task changed since it was read (optimistic concurrency), or
    the event no longer applies to it."""


class TryLater(AicoError):
    """Not now: give the message back for a later attempt (an expected outcome, not a bug)."""


class BrokerUnavailable(AicoError):
    """RabbitMQ cannot be reached or refused to take a message."""


class SlackError(AicoError):
    """Slack refused a call; `code` is Slack's error string (for example `not_in_channel`).
    `transient`: Slack was unreachable or failing, and the same call may work later."""

    def __init__(self, code: str, message: str | None = None, *, transient: bool = False) -> None:
        super().__init__(message or code)
        self.code = code
        self.transient = transient


class Withheld(AicoError):
    """A request to Claude held back before it left, by the caller's `ready` (the attempt it
    belonged to was not claimed): Claude was not asked."""


class ModelError(AicoError):
    """Claude failed. `transient` says whether a later attempt may succeed."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
