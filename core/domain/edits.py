"""The rules a code change from Claude must pass before aico writes anything. Pure.

Claude proposes a change by calling the `propose_changes` tool (EDIT_TOOL): a one-line summary,
edits (search/replace blocks, or whole files) and files to delete. `read_changes` checks the
tool's input; `check_path` keeps every path inside the repository and away from what must never
be written by a model — git's own files, CI workflows (they run with the repository's secrets),
hook and attribute configuration (they run commands on other people's machines), and files that
hold secrets; `plan_changes` computes every new file content, within size limits, before anything
is written, so one refused edit refuses the whole change and nothing is half-applied.

Decided here: `.gitmodules` is refused too (a changed submodule URL makes every clone fetch from
wherever it points), and so is every `.env.*`, templates such as `.env.example` included.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidInput

MAX_FILES = 20  # files one change may touch (written or deleted)
MAX_FILE_BYTES = 200_000  # the size of any file the change writes
MAX_TOTAL_BYTES = 500_000  # all the files the change writes, together
MAX_PATH_CHARS = 1024
MAX_SUMMARY_CHARS = 100

EDIT_TOOL: dict[str, Any] = {
    "name": "propose_changes",
    "description": (
        "Propose a change to the repository's files. It is applied on a new branch for a person "
        "to review; nothing is run. Propose the smallest change that does what was asked: edit "
        "only the files that must change, prefer search/replace edits to rewriting whole files, "
        "and keep the repository's style. Paths are relative to the repository root and use '/'. "
        "Files in .git/, CI workflows, hook configuration and secret or environment files "
        "cannot be changed."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "summary": {
                "type": "string",
                "description": "One line saying what the change does; it becomes the commit "
                "subject.",
            },
            "edits": {
                "type": "array",
                "description": "The edits, applied in order (several may edit the same file).",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "e.g. src/app/models.py"},
                        "search": {
                            "type": "string",
                            "description": "Exact text of the current file to replace: it must "
                            "occur exactly once, so include enough surrounding lines. Leave it "
                            "out to write the whole file (a new file, or a full rewrite).",
                        },
                        "replace": {
                            "type": "string",
                            "description": "The new text for the search text; without search, "
                            "the whole new content of the file.",
                        },
                    },
                    "required": ["path", "replace"],
                    "additionalProperties": False,
                },
            },
            "delete": {
                "type": "array",
                "description": "Paths of files to delete.",
                "items": {"type": "string"},
            },
        },
        "required": ["summary", "edits"],
        "additionalProperties": False,
    },
}

# Matched against each segment of the lower-cased path (so at any depth); a directory pattern
# refuses everything under it.
_GIT_DIRS = (".git", "git~1")  # git~1: the 8.3 short name Windows gives .git
_BLOCKED_DIRS = {
    ".github/workflows": "a CI workflow",
    ".github/actions": "a CI action",
    ".circleci": "CI configuration",
    ".buildkite": "CI configuration",
    ".woodpecker": "CI configuration",
    ".aws": "a secrets directory",
    ".ssh": "a secrets directory",
    ".gnupg": "a secrets directory",
    ".docker": "a secrets directory",
    ".kube": "a secrets directory",
    ".githooks": "git hooks",
    ".husky": "git hooks",
}
_BLOCKED_NAMES = {
    ".gitlab-ci.yml": "CI configuration",
    "*.gitlab-ci.yml": "CI configuration",
    "jenkinsfile": "CI configuration",
    "jenkinsfile.*": "CI configuration",
    ".travis.yml": "CI configuration",
    "azure-pipelines*.yml": "CI configuration",
    "bitbucket-pipelines.yml": "CI configuration",
    ".drone.yml": "CI configuration",
    ".woodpecker.yml": "CI configuration",
    "appveyor.yml": "CI configuration",
    ".appveyor.yml": "CI configuration",
    ".gitattributes": "git attributes (filters and drivers)",
    ".gitmodules": "git submodules",
    ".pre-commit-config.yaml": "hook configuration",
    ".pre-commit-hooks.yaml": "hook configuration",
    "lefthook.yml": "hook configuration",
    ".lefthook.yml": "hook configuration",
    "lefthook-local.yml": "hook configuration",
    ".env": "an environment file",
    ".env.*": "an environment file",
    "*.env": "an environment file",
    ".envrc": "an environment file",
    "*.pem": "a key or certificate",
    "*.key": "a key",
    "*.p12": "a key store",
    "*.pfx": "a key store",
    "*.jks": "a key store",
    "*.keystore": "a key store",
    "id_rsa*": "an SSH key",
    "id_dsa*": "an SSH key",
    "id_ecdsa*": "an SSH key",
    "id_ed25519*": "an SSH key",
    ".npmrc": "a credentials file",
    ".pypirc": "a credentials file",
    ".netrc": "a credentials file",
    "_netrc": "a credentials file",
    ".git-credentials": "a credentials file",
    ".htpasswd": "a credentials file",
    "secrets.*": "a secrets file",
    "credentials*": "a credentials file",
    "*.tfvars": "a secrets file",
}
_DRIVE = re.compile(r"^[a-z]:", re.IGNORECASE)


class EditRefused(InvalidInput):
    """A proposed change aico will not apply; the reason is for the thread to show."""


@dataclass(frozen=True)
class Edit:
    path: str  # normalised, repository-relative, '/'-separated
    search: str | None  # None: `text` is the whole new file
    text: str


@dataclass(frozen=True)
class ChangeSet:
    summary: str
    edits: tuple[Edit, ...]
    deletes: tuple[str, ...] = ()

    @property
    def paths(self) -> list[str]:
        """Every path the change touches, once each, in order."""
        return list(dict.fromkeys([e.path for e in self.edits] + list(self.deletes)))


def read_changes(tool_input: Any) -> ChangeSet:
    """The change in `propose_changes`' input, checked; EditRefused says what is wrong."""
    if not isinstance(tool_input, dict):
        raise EditRefused("the proposed change is not an object")
    summary = _summary(tool_input.get("summary"))
    edits = tuple(_edit(i, item) for i, item in enumerate(_list(tool_input, "edits"), 1))
    deletes = tuple(dict.fromkeys(_delete(item) for item in _list(tool_input, "delete")))
    if not edits and not deletes:
        raise EditRefused("the proposed change has no edits")
    if both := {e.path for e in edits} & set(deletes):
        raise EditRefused(f"{sorted(both)[0]} is both edited and deleted")
    changes = ChangeSet(summary, edits, deletes)
    _check_count(len(changes.paths))
    return changes


def _summary(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EditRefused("the proposed change has no summary")
    line = " ".join(value.split())
    return line if len(line) <= MAX_SUMMARY_CHARS else line[: MAX_SUMMARY_CHARS - 1] + "…"


def _list(tool_input: dict[str, Any], key: str) -> list[Any]:
    value = tool_input.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise EditRefused(f"`{key}` must be a list")
    return value


def _edit(number: int, item: Any) -> Edit:
    if not isinstance(item, dict):
        raise EditRefused(f"edit {number} is not an object")
    path, search, text = item.get("path"), item.get("search"), item.get("replace")
    if not isinstance(path, str):
        raise EditRefused(f"edit {number} has no path")
    if not isinstance(text, str):
        raise EditRefused(f"edit {number} ({path}) has no replace text")
    if search is not None and not isinstance(search, str):
        raise EditRefused(f"edit {number} ({path}): search must be text")
    if search == "":
        raise EditRefused(f"edit {number} ({path}): the search text is empty")
    return Edit(check_path(path), search, text)


def _delete(item: Any) -> str:
    if not isinstance(item, str):
        raise EditRefused("`delete` must list paths")
    return check_path(item)


def check_path(path: str) -> str:
    """`path` as a normalised repository-relative POSIX path, or EditRefused saying why aico
    will not write there."""
    if not isinstance(path, str) or not path.strip():
        raise EditRefused("a path is empty")
    shown = _shown(path)
    if len(path) > MAX_PATH_CHARS:
        raise EditRefused(f"the path {shown} is too long")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in path):
        raise EditRefused(f"the path {shown} contains control or invisible characters")
    unified = path.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise EditRefused(f"{shown} is an absolute path: paths are relative to the repository")
    if unified.endswith("/"):
        raise EditRefused(f"{shown} names a directory, not a file")
    segments = [s for s in unified.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise EditRefused(f"{shown} leads outside the repository (`..`)")
    if not segments:
        raise EditRefused(f"{shown} names no file")
    normal = "/".join(segments)
    _check_blocked(normal, shown)
    return normal


def _shown(path: str) -> str:
    return repr(path[:80] + ("…" if len(path) > 80 else ""))


def _check_blocked(normal: str, shown: str) -> None:
    lowered = [_comparable(s) for s in normal.split("/")]
    if any(s in _GIT_DIRS for s in lowered):
        raise EditRefused(f"{shown} is inside .git: git's own files are never written")
    joined = "/".join(lowered)
    for directory, what in _BLOCKED_DIRS.items():
        if f"/{directory}/" in f"/{joined}":
            raise EditRefused(f"{shown} is {what}: aico does not change it")
    for pattern, what in _BLOCKED_NAMES.items():
        if fnmatch.fnmatchcase(lowered[-1], pattern):
            raise EditRefused(f"{shown} is {what}: aico does not change it")


def _comparable(segment: str) -> str:
    """A segment as case-insensitive file systems see it (Windows also drops trailing dots and
    spaces, so `.git.` is `.git` there)."""
    return segment.casefold().rstrip(". ") or segment


def apply_edit(current: str | None, edit: Edit) -> str:
    """The file's content after `edit`; `current` is None for a file that does not exist."""
    if edit.search is None:
        return edit.text
    if current is None:
        raise EditRefused(f"{edit.path} does not exist, so its search text cannot be found")
    at = current.find(edit.search)
    if at < 0:
        raise EditRefused(f"the search text for {edit.path} does not occur in it (0 matches)")
    if (count := _occurrences(current, edit.search)) > 1:
        raise EditRefused(
            f"the search text for {edit.path} occurs {count} times: it must match exactly once"
        )
    return current[:at] + edit.text + current[at + len(edit.search) :]


def _occurrences(text: str, part: str) -> int:
    """How often `part` occurs in `text`, overlapping occurrences counted."""
    count, at = 0, text.find(part)
    while at >= 0:
        count, at = count + 1, text.find(part, at + 1)
    return count


def plan_changes(changes: ChangeSet, read: Callable[[str], str | None]) -> dict[str, str | None]:
    """Every touched path's new content (None: deleted), computed before anything is written.
    `read(path)` gives a file's current content, None if it does not exist."""
    _check_count(len(changes.paths))
    _check_nesting(changes.paths)
    before: dict[str, str | None] = {}
    after: dict[str, str | None] = {}
    for edit in changes.edits:
        if edit.path not in before:
            before[edit.path] = after[edit.path] = read(edit.path)
        after[edit.path] = apply_edit(after[edit.path], edit)
    for path in changes.deletes:
        if read(path) is None:
            raise EditRefused(f"{path} does not exist, so it cannot be deleted")
        after[path] = None
    _check_sizes(after)
    if not changes.deletes and all(after[p] == before[p] for p in after):
        raise EditRefused("the proposed change leaves every file as it is")
    return after


def _check_count(files: int) -> None:
    if files > MAX_FILES:
        raise EditRefused(f"the change touches {files} files; at most {MAX_FILES} are allowed")


def _check_nesting(paths: list[str]) -> None:
    for path in paths:
        for other in paths:
            if other.startswith(path + "/"):
                raise EditRefused(f"{path} cannot be both a file and the directory of {other}")


def _check_sizes(after: dict[str, str | None]) -> None:
    total = 0
    for path, text in after.items():
        size = len(encode(text)) if text is not None else 0
        if size > MAX_FILE_BYTES:
            raise EditRefused(
                f"{path} would be {size:,} bytes; a file may be at most {MAX_FILE_BYTES:,}"
            )
        total += size
    if total > MAX_TOTAL_BYTES:
        raise EditRefused(
            f"the change writes {total:,} bytes; a change may write at most {MAX_TOTAL_BYTES:,}"
        )


def encode(text: str) -> bytes:
    """A file's bytes from its text; `decode` gives back bytes that are not UTF-8 unchanged."""
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")
