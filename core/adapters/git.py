"""The team's repositories through git (GitPython): clones kept in sync with their remotes, and
Claude's proposed changes as a commit on a branch `aico/<task-id>` in a worktree of their own.

Everything here runs the real `git` with:
- a token only in the environment of the one command that needs it, as an `http.extraHeader`
  scoped to the repository's host (never in a URL, a remote's config or the command line), and
  scrubbed, with any URL userinfo, from every message this module raises;
- `GIT_TERMINAL_PROMPT=0` and ssh in batch mode, so a missing credential fails instead of waiting;
- hooks pointed at an empty directory (aico never runs code from a repository or a model), and
  literal pathspecs (a path such as `:(glob)*` is a file name, never pathspec magic);
- timeouts on network operations.

The checkout is aico's own: it is hard-reset to the remote branch on every sync and never edited.
A change never touches it: it is made in a worktree under `worktrees_dir(...)/<task-id>`, and a
failure between writing and committing removes that worktree and its branch again.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import git

from core.domain.edits import ChangeSet, EditRefused, decode, encode, plan_changes
from core.domain.repos import RepoSpec
from core.errors import AicoError

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT = 300.0  # seconds for a clone, fetch or push before git is killed
LOCAL_TIMEOUT = 120.0  # seconds for any other git command
MAX_DIFF_CHARS = 200_000  # the unified diff a Proposal carries
BRANCH_PREFIX = "aico/"
TASK_TRAILER = "Aico-Task"  # the commit trailer that ties a commit to its task

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_ORIGIN = re.compile(r"(?i)^(https?://)(?:[^@/]+@)?([^/]+)")  # scheme and host, no userinfo
_TELLING = ("fatal:", "error:", "! ", "remote:", "ssh:")  # the lines of git's stderr that say why
_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_LITERAL_PATHSPECS": "1",
    "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
    "GCM_INTERACTIVE": "never",
}


class GitError(AicoError):
    """A git operation failed; the message is short, and free of tokens and URL credentials."""


@dataclass(frozen=True)
class Synced:
    revision: str  # the commit the checkout is at now
    previous: str | None  # the commit it was at before; None after a first clone
    changed: list[str] | None  # paths that differ between the two; None: everything (a clone)
    branch: str


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int  # lines (0 for a binary file)
    removed: int
    status: str  # "added", "modified" or "deleted"


@dataclass(frozen=True)
class Proposal:
    branch: str
    commit: str
    base: str  # the commit the change was made on
    files: list[FileChange]
    diff: str  # the unified diff of base..commit, cut at MAX_DIFF_CHARS

    def stat(self) -> str:
        """One line for the thread: `2 files changed, +10 -3`."""
        added = sum(f.added for f in self.files)
        removed = sum(f.removed for f in self.files)
        files = f"{len(self.files)} file" + ("" if len(self.files) == 1 else "s")
        return f"{files} changed, +{added} -{removed}"


# ---- running git ----


def _git(cwd: Path | None, *args: str, what: str, **options: Any) -> str:
    """git's standard output as text; GitError(`what`: git's reason) when it fails."""
    return decode(_git_bytes(cwd, *args, what=what, **options))


def _git_bytes(
    cwd: Path | None,
    *args: str,
    what: str,
    secrets: tuple[str, ...] = (),
    **options: Any,
) -> bytes:
    status, out, err = _run(cwd, args, **options)
    if status != 0:
        raise GitError(f"{what}: {_reason(err, secrets)}")
    return out


def _run(
    cwd: Path | None,
    args: tuple[str, ...] | list[str],
    env: dict[str, str] | None = None,
    timeout: float = LOCAL_TIMEOUT,
    stdin: BinaryIO | None = None,
    hooks: Path | None = None,
) -> tuple[int, bytes, bytes]:
    """git's exit status, standard output and standard error. `hooks`: the (empty) directory
    git looks for hooks in."""
    # `-C`, not a working directory: GitPython runs in the process's directory when the given
    # one is missing, and git would then find whatever repository is there.
    where = ["-C", str(cwd)] if cwd is not None else []
    no_hooks = ["-c", f"core.hooksPath={hooks}"] if hooks is not None else []
    result = git.Git().execute(
        ["git", *where, *no_hooks, *args],
        istream=stdin,
        with_extended_output=True,
        with_exceptions=False,
        stdout_as_string=False,
        strip_newline_in_stdout=False,
        kill_after_timeout=timeout,
        env={**_ENV, **(env or {})},
    )
    return cast(tuple[int, bytes, bytes], result)


def _ok(cwd: Path, *args: str) -> bool:
    try:
        _git_bytes(cwd, *args, what="check")
    except GitError:
        return False
    return True


def _reason(err: object, secrets: tuple[str, ...]) -> str:
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.lower().startswith("hint:")]
    important = [line for line in lines if line.lower().startswith(_TELLING)]
    reason = " ".join((important or lines[-2:]) or ["git failed"])
    return scrub(reason, secrets)[:400]


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without the given secrets and without credentials in any URL."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True)
class _Remote:
    """A repository's remote, and how to reach it: the token only in the environment of the
    commands that talk to it, scoped to its host, and scrubbed from their errors."""

    name: str
    location: str  # a local path made absolute
    branch: str  # "": the checkout's (the remote's default when cloned)
    env: dict[str, str]
    secrets: tuple[str, ...]
    timeout: float

    @classmethod
    def of(cls, spec: RepoSpec, token: str, timeout: float) -> _Remote:
        if spec.location.startswith("-") or spec.branch.startswith("-"):
            raise GitError(f"repository {spec.name}: a location or branch cannot start with '-'")
        location = _where(spec.location)
        origin = _ORIGIN.match(location)
        if not token or not origin:
            return cls(spec.name, location, spec.branch, {}, (token,), timeout)
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env = {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{origin.group(1)}{origin.group(2)}/.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }
        return cls(spec.name, location, spec.branch, env, (token, basic), timeout)

    def git(
        self, cwd: Path | None, *args: str, what: str, then: tuple[str, ...], **options: Any
    ) -> str:
        """`git <args> -- <location> <then>`, a command that talks to the remote; `what` is
        completed with which repository and where."""
        what = f"{what} {self.name} ({scrub(self.location)})"
        options |= {"env": self.env, "timeout": self.timeout, "secrets": self.secrets}
        return _git(cwd, *args, "--", self.location, *then, what=what, **options)


def _where(location: str) -> str:
    """A local path as an absolute one (git resolves a relative one against its -C)."""
    if "://" in location or re.match(r"^[^/]+:", location):
        return location
    return str(Path(location).expanduser().resolve())


# ---- sync ----


def sync(
    spec: RepoSpec, checkout: Path, token: str = "", timeout: float = NETWORK_TIMEOUT
) -> Synced:
    """Bring the checkout of `spec` to its remote branch: a clone the first time, else a fetch
    and a hard reset. `token` (for https) is used for this call only. GitError says why not."""
    remote = _Remote.of(spec, token, timeout)
    if _is_clone(checkout):
        return _fetch(remote, checkout)
    return _clone(remote, checkout)


def _is_clone(checkout: Path) -> bool:
    """A complete clone (a crash mid-clone leaves something else, which is cloned over)."""
    return (
        (checkout / ".git").is_dir()
        and _ok(checkout, "symbolic-ref", "-q", "HEAD")
        and _ok(checkout, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    )


def _clone(remote: _Remote, checkout: Path) -> Synced:
    """Clone next to the checkout, then move it into place: a crash never leaves half a clone
    where a complete one is expected."""
    staging = checkout.with_name(f".{checkout.name}.cloning")
    _remove(staging)
    _remove(checkout)
    checkout.parent.mkdir(parents=True, exist_ok=True)
    pick = ["--branch", remote.branch] if remote.branch else []
    logger.info("cloning repository %s", remote.name)
    options = ["--quiet", "--no-tags", "--single-branch", *pick]
    remote.git(None, "clone", *options, what="could not clone", then=(str(staging),))
    os.replace(staging, checkout)
    return Synced(_rev(checkout, "HEAD"), None, None, _branch(checkout))


def _fetch(remote: _Remote, checkout: Path) -> Synced:
    previous = _rev(checkout, "HEAD")
    branch = remote.branch or _branch(checkout)
    tracking = f"refs/remotes/origin/{branch}"
    refspec = f"+refs/heads/{branch}:{tracking}"
    remote.git(checkout, "fetch", "--quiet", "--no-tags", what="could not fetch", then=(refspec,))
    reset = ["checkout", "--quiet", "--force", "-B", branch, tracking]
    _git(checkout, *reset, what=f"could not update {remote.name}", hooks=_no_hooks(checkout))
    _git(checkout, "clean", "-ffdxq", what=f"could not clean {remote.name}")
    revision = _rev(checkout, "HEAD")
    return Synced(revision, previous, _changed(checkout, previous, revision), branch)


def _changed(checkout: Path, previous: str, revision: str) -> list[str] | None:
    if previous == revision:
        return []
    try:
        out = _git(
            checkout, "diff", "--name-only", "--no-renames", "-z", previous, revision, what="diff"
        )
    except GitError:
        return None  # the previous commit is gone: treat everything as changed
    return [path for path in out.split("\0") if path]


def _rev(repo: Path, ref: str) -> str:
    return _git(
        repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", what=f"no commit {ref}"
    ).strip()


def _rev_or_none(repo: Path, ref: str) -> str | None:
    try:
        return _rev(repo, ref)
    except GitError:
        return None


def _branch(repo: Path) -> str:
    return _git(
        repo, "symbolic-ref", "--short", "HEAD", what="the checkout is on no branch"
    ).strip()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _no_hooks(checkout: Path) -> Path:
    """An empty directory for core.hooksPath, inside the checkout's .git (which git ignores)."""
    hooks = checkout / ".git" / "aico-no-hooks"
    if hooks.exists() and any(hooks.iterdir()):
        shutil.rmtree(hooks)
    hooks.mkdir(exist_ok=True)
    return hooks


# ---- proposals ----


def branch_for(task_id: str) -> str:
    """The branch of a task's change: `aico/<task-id>`."""
    if not _TASK_ID.match(task_id):
        raise GitError(f"{task_id!r} cannot name a branch")
    return BRANCH_PREFIX + task_id


def propose(
    checkout: Path,
    worktrees: Path,
    task_id: str,
    changes: ChangeSet,
    message: str,
    author: tuple[str, str],
) -> Proposal:
    """`changes` committed on a new branch `aico/<task-id>` at the checkout's revision, in a
    worktree of its own. The commit's subject is the change's summary and `message` its body.
    Idempotent: if the task's commit is already there, that Proposal is returned. EditRefused
    (nothing written) for a change that breaks the rules; GitError if git fails."""
    branch = branch_for(task_id)
    if branch == _branch(checkout):
        raise GitError(f"{branch} is the checkout's own branch: changes never go there")
    if (found := find(checkout, task_id)) is not None:
        return found
    tree = worktrees / task_id
    _discard(checkout, tree, branch)
    hooks = _no_hooks(checkout)
    worktrees.mkdir(parents=True, exist_ok=True)
    try:
        _add_worktree(checkout, tree, branch, hooks)
        plan = _plan(tree, changes)
        _write(tree, plan)
        text = commit_message(changes.summary, message, task_id)
        _commit(tree, hooks, list(plan), text, author)
    except EditRefused as refused:
        logger.info("task %s: change refused: %s", task_id, refused)
        _discard_quietly(checkout, tree, branch)
        raise
    except BaseException:
        _discard_quietly(checkout, tree, branch)
        raise
    logger.info("task %s: committed its change on %s", task_id, branch)
    return _proposal(checkout, branch)


def _add_worktree(checkout: Path, tree: Path, branch: str, hooks: Path) -> None:
    """A new branch at the checkout's revision, checked out at `tree`."""
    add = ["worktree", "add", "--quiet", "-b", branch, str(tree), _rev(checkout, "HEAD")]
    _git(checkout, *add, what=f"could not make a worktree for {branch}", hooks=hooks)


def find(checkout: Path, task_id: str) -> Proposal | None:
    """The committed change of task `task_id`, or None if there is none."""
    branch = branch_for(task_id)
    commit = _rev_or_none(checkout, f"refs/heads/{branch}")
    if commit is None:
        return None
    trailer = f"--format=%(trailers:key={TASK_TRAILER},valueonly)"
    trailers = _git(checkout, "log", "-1", trailer, commit, what="could not read the commit")
    if task_id not in trailers.split():
        return None
    return _proposal(checkout, branch)


def discard(checkout: Path, worktrees: Path, branch: str) -> None:
    """Remove the change on `branch` (its worktree and its branch); nothing if already gone."""
    _discard(checkout, worktrees / _task_of(branch), branch)


def push(
    checkout: Path, branch: str, spec: RepoSpec, token: str = "", timeout: float = NETWORK_TIMEOUT
) -> None:
    """Push `branch` to the same name at `spec`'s location; never forced, so a branch that is
    already there with another commit is refused by the remote."""
    _task_of(branch)
    ref = f"refs/heads/{branch}"
    _rev(checkout, ref)
    remote = _Remote.of(spec, token, timeout)
    hooks = _no_hooks(checkout)
    what = f"could not push {branch} to"
    remote.git(
        checkout, "push", "--quiet", "--no-verify", what=what, then=(f"{ref}:{ref}",), hooks=hooks
    )
    logger.info("pushed %s to %s", branch, remote.name)


def _task_of(branch: str) -> str:
    task_id = branch.removeprefix(BRANCH_PREFIX)
    if not branch.startswith(BRANCH_PREFIX) or branch_for(task_id) != branch:
        raise GitError(f"{branch!r} is not a branch of aico's changes")
    return task_id


def _discard(checkout: Path, tree: Path, branch: str) -> None:
    # The directory, then git's record of it: `git worktree remove` took 6 s on 20,000 files.
    _remove(tree)
    _git(checkout, "worktree", "prune", what="could not prune worktrees")
    if _rev_or_none(checkout, f"refs/heads/{branch}") is not None:
        _git(checkout, "branch", "--quiet", "-D", branch, what=f"could not delete {branch}")


def _discard_quietly(checkout: Path, tree: Path, branch: str) -> None:
    """Clean up after a failed proposal without hiding why it failed."""
    try:
        _discard(checkout, tree, branch)
    except GitError:
        logger.exception("could not remove the worktree of %s", branch)
        shutil.rmtree(tree, ignore_errors=True)


# ---- a change, applied ----


def _plan(tree: Path, changes: ChangeSet) -> dict[str, str | None]:
    root = Path(os.path.realpath(tree))
    for path in changes.paths:
        _check_location(root, path, deleting=path in changes.deletes)
    plan = plan_changes(changes, lambda path: _read(root / path))
    _check_ignored(tree, [path for path, text in plan.items() if text is not None])
    return plan


def _check_location(root: Path, path: str, *, deleting: bool) -> None:
    """Refuse a path whose real location (every symlink on the way resolved, the file's own too
    unless it is being deleted) is outside the worktree, inside .git, or anywhere else than the
    path says (aico does not write through links)."""
    lexical = root / path
    parent = Path(os.path.realpath(lexical.parent))
    real = parent / lexical.name if deleting else Path(os.path.realpath(lexical))
    if not real.is_relative_to(root) or real == root:
        raise EditRefused(f"{path} leads outside the repository (through a symbolic link)")
    if any(part.casefold().rstrip(". ") == ".git" for part in real.relative_to(root).parts):
        raise EditRefused(f"{path} leads into .git (through a symbolic link)")
    if real != lexical:
        shown = real.relative_to(root).as_posix()
        raise EditRefused(f"{path} goes through a symbolic link to {shown}: edit {shown} instead")
    for above in reversed(lexical.relative_to(root).parents[:-1]):
        if (root / above).exists() and not (root / above).is_dir():
            raise EditRefused(f"{path} cannot be written: {above.as_posix()} is a file")
    if lexical.is_dir() and not lexical.is_symlink():
        raise EditRefused(f"{path} is a directory, not a file")


def _read(file: Path) -> str | None:
    if file.is_symlink():
        return ""  # only deleted (edits through links are refused): its target is never read
    if not file.exists():
        return None
    if not file.is_file():
        raise EditRefused(f"{file.name} is not a regular file")
    return decode(file.read_bytes())


def _check_ignored(tree: Path, paths: list[str]) -> None:
    """Refuse a new file that the repository's .gitignore keeps out (git would not stage it)."""
    if not paths:
        return
    # check-ignore takes no literal pathspecs: "./" keeps a leading ":" from being magic.
    with tempfile.TemporaryFile() as names:
        names.write(b"".join(encode(f"./{path}") + b"\0" for path in paths))
        names.seek(0)
        command = ["check-ignore", "--stdin", "-z"]
        status, out, err = _run(tree, command, env={"GIT_LITERAL_PATHSPECS": "0"}, stdin=names)
    if status not in (0, 1):
        raise GitError(f"could not read the repository's .gitignore: {_reason(err, ())}")
    if status == 0 and (ignored := [p for p in decode(out).split("\0") if p]):
        raise EditRefused(
            f"{ignored[0].removeprefix('./')} is ignored by the repository's .gitignore"
        )


def _write(tree: Path, plan: dict[str, str | None]) -> None:
    for path, text in plan.items():
        file = tree / path
        if text is None:
            file.unlink()
            continue
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(encode(text))


def _commit(tree: Path, hooks: Path, paths: list[str], text: str, author: tuple[str, str]) -> None:
    _git(tree, "add", "--all", "--", *paths, what="could not stage the change", hooks=hooks)
    name, email = (re.sub(r"[<>\n\r]", "", part).strip() or "aico" for part in author)
    who = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email}
    who |= {"GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    commit = ["-c", "commit.gpgSign=false", "commit", "--quiet", "--no-verify"]
    with tempfile.TemporaryFile() as message:  # not -m: a long prompt could pass ARG_MAX
        message.write(encode(text))
        message.seek(0)
        options = {"env": who, "stdin": message, "hooks": hooks}
        _git(tree, *commit, "--cleanup=whitespace", "-F", "-", what="could not commit", **options)


def commit_message(summary: str, body: str, task_id: str) -> str:
    """The summary as the subject, the body, and the trailer that ties the commit to its task
    (what `find` looks for)."""
    middle = f"{body.strip()}\n\n" if body.strip() else ""
    return f"{summary}\n\n{middle}{TASK_TRAILER}: {task_id}\n"


def _proposal(checkout: Path, branch: str) -> Proposal:
    commit = _rev(checkout, f"refs/heads/{branch}")
    base = _rev(checkout, f"{commit}^")
    span = ("--no-renames", "--no-ext-diff", "--no-textconv", base, commit)
    numstat = _git(checkout, "diff", "--numstat", "-z", *span, what="diff").split("\0")
    status = _git(checkout, "diff", "--name-status", "-z", *span, what="diff").split("\0")
    letters = dict(zip(status[1::2], status[0::2], strict=False))
    files = [_file_change(record, letters) for record in numstat if record]
    diff = _git_bytes(checkout, "diff", "--no-color", *span, what="diff").decode("utf-8", "replace")
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n… (the diff is cut at {MAX_DIFF_CHARS:,} characters)\n"
    return Proposal(branch, commit, base, files, diff)


def _file_change(record: str, letters: dict[str, str]) -> FileChange:
    added, removed, path = record.split("\t", 2)
    words = {"A": "added", "D": "deleted"}
    return FileChange(
        path,
        int(added) if added.isdigit() else 0,
        int(removed) if removed.isdigit() else 0,
        words.get(letters.get(path, "M"), "modified"),
    )
