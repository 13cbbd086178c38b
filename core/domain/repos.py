"""The repositories the workers draw context from (`AICO_REPOS`), and where each lives. Pure.

`AICO_REPOS` is a comma-separated list of entries, each

    [name=]location[#branch][ web=URL]

`location` is a git URL (https, ssh, `git@host:path`) or a local path; `#branch` picks a branch (by
default the remote's default branch); `name` is what tasks and `/aico config repo` call it (by
default the location's last part without `.git`); `web=` is where its files are shown, for the
answer's `path:line` links (by default derived from an https or `git@` URL of a well-known forge,
none for a local path). A token for a private repository comes from `AICO_REPO_TOKEN_<NAME>` (the
name upper-cased, `-` and `.` as `_`) or, for all of them, `AICO_REPOS_TOKEN`: it is never part of
the location, so it cannot reach a log, a prompt, Slack or the event store through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_SCP = re.compile(r"^[\w.-]+@([\w.-]+):(.+?)(?:\.git)?/?$")  # git@github.com:org/repo.git
_HTTPS = re.compile(r"^https?://(?:[^@/]+@)?([^/]+)/(.+?)(?:\.git)?/?$")
FORGES = ("github.com", "gitlab.com", "bitbucket.org", "codeberg.org")


@dataclass(frozen=True)
class RepoSpec:
    name: str
    location: str
    branch: str = ""  # "": the remote's default branch
    web: str = ""  # base URL of the repository's web view; "": no links

    @property
    def token_variable(self) -> str:
        return "AICO_REPO_TOKEN_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    def link(self, path: str, line: int, ref: str) -> str:
        """The web URL of `path` at `line` (at commit or branch `ref`), or "" without a web URL."""
        if not self.web:
            return ""
        if "bitbucket.org" in self.web:
            return f"{self.web}/src/{ref}/{path}#lines-{line}"
        middle = "/-/blob/" if "gitlab" in self.web else "/blob/"
        return f"{self.web}{middle}{ref}/{path}#L{line}"


def parse_repos(text: str) -> list[RepoSpec]:
    """The entries of `AICO_REPOS`; ValueError names the entry that cannot be read."""
    specs: list[RepoSpec] = []
    for entry in (part.strip() for part in (text or "").split(",")):
        if not entry:
            continue
        spec = _entry(entry)
        if any(s.name == spec.name for s in specs):
            raise ValueError(f"AICO_REPOS names {spec.name!r} twice: give one of them a name=")
        specs.append(spec)
    return specs


def _entry(entry: str) -> RepoSpec:
    words = entry.split()
    web = ""
    for word in words[1:]:
        if not word.startswith("web="):
            raise ValueError(f"AICO_REPOS entry {entry!r}: expected `web=URL` after the location")
        web = word.removeprefix("web=").rstrip("/")
    head = words[0]
    name = ""
    if "=" in head.split("://")[0].split("@")[0] and not head.startswith(("/", ".")):
        name, head = head.split("=", 1)
    location, _, branch = head.partition("#")
    if not location:
        raise ValueError(f"AICO_REPOS entry {entry!r} has no location")
    name = name or _default_name(location)
    if not _NAME.match(name):
        raise ValueError(
            f"AICO_REPOS entry {entry!r}: the name {name!r} must be 1-40 letters, digits, "
            "'.', '_' or '-'"
        )
    if location.startswith(("http://", "https://")) and "@" in location.split("/")[2]:
        raise ValueError(
            f"AICO_REPOS entry for {name!r} carries credentials in its URL: put the token in "
            f"AICO_REPO_TOKEN_{re.sub(r'[^A-Z0-9]', '_', name.upper())} instead"
        )
    return RepoSpec(name, location, branch, web or _default_web(location))


def _default_name(location: str) -> str:
    last = location.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
    return last.removesuffix(".git") or "repo"


def _default_web(location: str) -> str:
    for pattern in (_HTTPS, _SCP):
        if (m := pattern.match(location)) and m.group(1) in FORGES:
            return f"https://{m.group(1)}/{m.group(2)}"
    return ""


def checkout_dir(data_dir: Path, name: str) -> Path:
    """Where the clone of repository `name` is kept (its working tree is what is indexed)."""
    return data_dir / "repos" / name


def index_dir(data_dir: Path, name: str) -> Path:
    """Where the saved index of repository `name` is kept."""
    return data_dir / "repos" / f"{name}.index"


def worktrees_dir(data_dir: Path, name: str) -> Path:
    """Where the worktrees of code changes to repository `name` are made."""
    return data_dir / "repos" / f"{name}.changes"
