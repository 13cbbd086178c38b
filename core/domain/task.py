"""Tasks: identity, status and the rules for what a user may ask."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from core.errors import InvalidInput

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case: easy to type
ID_LENGTH = 10


class TaskStatus(StrEnum):
    SUBMITTED = "submitted"  # recorded and acked; not yet on the queue
    QUEUED = "queued"  # on the queue, parent message posted
    RUNNING = "running"  # a worker is asking Claude
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


def new_task_id() -> str:
    """A short random id (50 bits) that a person can type in `/aico cancel <id>`."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))


def derived_task_id(*parts: str) -> str:
    """A task id derived from `parts` (a project's step: the project's id and the step's), so
    that recording it twice is recording it once; typeable like any task id."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:ID_LENGTH])


def is_task_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(ch in _ALPHABET for ch in text)


def clean_prompt(text: str, max_chars: int) -> str:
    """The task text as Claude will get it, or InvalidInput with what to do instead."""
    prompt = text.replace("\x00", "").strip()
    if not prompt:
        raise InvalidInput("Tell me what to do: `/aico task &lt;what to do&gt;`.")
    if len(prompt) > max_chars:
        raise InvalidInput(
            f"That task is {len(prompt):,} characters; the limit is {max_chars:,}. "
            "Shorten it, or put the details in a file or a repository and point me at it."
        )
    return prompt
