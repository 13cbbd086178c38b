"""The team's repositories: kept fresh on each host, indexed, and searched for a task's context.

Every `aico pm` keeps its host's clones (`RepoKeeper`, an APScheduler job every
AICO_REPO_FETCH_EVERY seconds, at start too): it clones or fetches each repository of
AICO_REPOS, re-indexes only the files that changed, and saves the index next to the clone. Each
outcome that is news (a new revision, a failure, a recovery) is an event of the repository
(`repo:<name>`), which `/aico status` and the health check read; one repository failing leaves
the others working. A task never waits for a fetch: a task worker searches the saved index
(`RepoContext`), loading it again only when the pm has saved a newer one.

A token is given to git only. Anything said about a failure is scrubbed of it first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from core.domain.citations import Linker, Source
from core.domain.health import Level, Probe
from core.domain.repos import RepoSpec, checkout_dir, index_dir
from core.domain.retrieval import Hit, Results, within_budget
from core.ports import EventStore

log = logging.getLogger(__name__)

SYNCED, FAILED = "repo_synced", "repo_failed"
LOOK_BACK = 50  # events of a repository read to find each host's latest


def aggregate(name: str) -> str:
    return f"repo:{name}"


class Synced(Protocol):
    revision: str
    previous: str | None
    changed: list[str] | None  # None: everything (a first clone)
    branch: str


class Index(Protocol):
    revision: str

    @property
    def files(self) -> int: ...
    @property
    def chunks(self) -> int: ...
    def refresh(self, root: Path, changed: Iterable[str]) -> int: ...
    def search(self, query: str, k: int = 8) -> Results: ...
    def save(self, directory: Path) -> None: ...


Sync = Callable[[RepoSpec, Path, str], Synced]
Build = Callable[[Path], Index]
Load = Callable[[Path], Index]


@dataclass(frozen=True)
class RepoState:
    """A repository as its latest event on one host says."""

    name: str
    host: str
    ok: bool
    at: float
    revision: str = ""
    error: str = ""
    files: int = 0
    chunks: int = 0


@dataclass
class RepoKeeper:
    specs: Sequence[RepoSpec]
    data_dir: Path
    store: EventStore
    sync: Sync
    build: Build
    load: Load
    token: Callable[[str], str]  # a repository's token by name ("" for none)
    host: str
    clock: Callable[[], float] = time.time

    def sync_all(self) -> list[RepoState]:
        """Each repository cloned or fetched and indexed; what each is now."""
        return [self.sync_one(spec) for spec in self.specs]

    def sync_one(self, spec: RepoSpec) -> RepoState:
        started = time.monotonic()
        token = self.token(spec.name)
        try:
            synced = self.sync(spec, checkout_dir(self.data_dir, spec.name), token)
            index, reindexed = self._index(spec, synced)
        except Exception as exc:  # a repository that fails must not stop the others
            error = _scrubbed(str(exc) or type(exc).__name__, token)
            log.warning("repository %s: %s", spec.name, error)
            return self._failed(spec, error)
        took = round(time.monotonic() - started, 3)
        log.info(
            "repository %s at %s: %d file(s) re-indexed in %.1f s",
            spec.name,
            synced.revision[:12],
            reindexed,
            took,
        )
        data = {
            "host": self.host,
            "revision": synced.revision,
            "previous": synced.previous or "",
            "branch": synced.branch,
            "changed": None if synced.changed is None else len(synced.changed),
            "reindexed": reindexed,
            "files": index.files,
            "chunks": index.chunks,
            "took_s": took,
        }
        last = self._latest(spec.name)
        if last is None or not last.ok or last.revision != synced.revision:
            self.store.record(aggregate(spec.name), SYNCED, data)
        return RepoState(
            spec.name, self.host, True, self.clock(), synced.revision, "", *_size(index)
        )

    def _index(self, spec: RepoSpec, synced: Synced) -> tuple[Index, int]:
        """The repository's index at `synced.revision`: the saved one refreshed with the files
        that changed since its revision, or one built anew. Returns it and the files read."""
        checkout, directory = (
            checkout_dir(self.data_dir, spec.name),
            index_dir(self.data_dir, spec.name),
        )
        index = self._saved(directory)
        if index is not None and index.revision == synced.revision:
            return index, 0
        if index is not None and synced.changed is not None and index.revision == synced.previous:
            reindexed = index.refresh(checkout, synced.changed)
        else:
            index, reindexed = self.build(checkout), -1
        index.revision = synced.revision
        index.save(directory)
        return index, index.files if reindexed < 0 else reindexed

    def _saved(self, directory: Path) -> Index | None:
        try:
            return self.load(directory)
        except (FileNotFoundError, ValueError, OSError) as exc:
            if directory.exists():
                log.warning(
                    "the index in %s cannot be read (%s); building it again", directory, exc
                )
            return None

    def _failed(self, spec: RepoSpec, error: str) -> RepoState:
        last = self._latest(spec.name)
        if last is None or last.ok or last.error != error:
            self.store.record(aggregate(spec.name), FAILED, {"host": self.host, "error": error})
        return RepoState(spec.name, self.host, False, self.clock(), error=error)

    def _latest(self, name: str) -> RepoState | None:
        return next((s for s in states(self.store, name) if s.host == self.host), None)


def states(store: EventStore, name: str) -> list[RepoState]:
    """The latest state of repository `name` on each host that keeps it, newest first."""
    seen: dict[str, RepoState] = {}
    for record in reversed(store.tail(aggregate(name), LOOK_BACK)):
        host = str(record.data.get("host", ""))
        if host in seen:
            continue
        d = record.data
        seen[host] = RepoState(
            name,
            host,
            record.type == SYNCED,
            record.at,
            str(d.get("revision", "")),
            str(d.get("error", "")),
            int(d.get("files") or 0),
            int(d.get("chunks") or 0),
        )
    return list(seen.values())


def probe(store: EventStore, specs: Sequence[RepoSpec]) -> Callable[[], Probe | None]:
    """The health check of the repositories: degraded while any fails to clone or fetch on any
    host (the others keep working), naming each with its error."""

    def check() -> Probe | None:
        if not specs:
            return None
        failing = [s for spec in specs for s in states(store, spec.name) if not s.ok]
        if not failing:
            return Probe(
                "repos",
                Level.OK,
                f"{len(specs)} repositor{'y' if len(specs) == 1 else 'ies'} in sync",
            )
        detail = "; ".join(f"{s.name} on {s.host}: {s.error}" for s in failing[:5])
        return Probe("repos", Level.DEGRADED, f"not in sync: {detail}")

    return check


@dataclass
class RepoContext:
    """A task worker's side: the saved indexes, searched for a task's context. An index is
    loaded when first needed and again when the pm has saved a newer one (its revision file
    changed); a repository whose index is not there yet gives no context, and says so."""

    specs: Sequence[RepoSpec]
    data_dir: Path
    load: Load
    budget_tokens: int
    k: int = 12
    _loaded: dict[str, tuple[float, Index]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def spec(self, name: str) -> RepoSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    def linker(self, sources: Sequence[Source]) -> Linker:
        """Links to the lines of the repositories' web views, at the revisions the sources
        were indexed at."""
        revisions = {s.repo: s.revision for s in sources}

        def link(repo: str, path: str, line: int) -> str:
            spec = self.spec(repo)
            return (
                spec.link(path, line, revisions.get(repo) or spec.branch or "HEAD") if spec else ""
            )

        return link

    def excerpts(self, query: str, repo: str = "") -> list[tuple[Source, str]]:
        """The best chunks for `query` from repository `repo` (all of them for ""), within the
        token budget, as (where from, text) pairs, best first."""
        if self.budget_tokens <= 0:
            return []
        found: list[Hit] = []  # chunk paths qualified as "repo\0path": two repos may share one
        revisions: dict[str, str] = {}
        for name in [repo] if repo else self.names():
            index = self._index(name)
            if index is None:
                continue
            revisions[name] = index.revision
            found += [_qualified(hit, name) for hit in index.search(query, self.k).chunks]
        found.sort(key=lambda hit: -hit.score)
        excerpts = []
        for hit in within_budget(found, self.budget_tokens):
            name, path = hit.chunk.path.split("\0", 1)
            chunk = replace(hit.chunk, path=path)
            source = Source(
                name, path, chunk.start, chunk.end, round(hit.score, 4), chunk.name, revisions[name]
            )
            excerpts.append((source, chunk.text))
        return excerpts

    def _index(self, name: str) -> Index | None:
        directory = index_dir(self.data_dir, name)
        try:
            stamp = max((p.stat().st_mtime for p in directory.iterdir()), default=0.0)
        except OSError:
            log.warning("repository %s has no index yet: no context from it", name)
            return None
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None and loaded[0] == stamp:
                return loaded[1]
            try:
                index = self.load(directory)
            except (FileNotFoundError, ValueError, OSError) as exc:
                log.warning("repository %s: its index cannot be read (%s)", name, exc)
                return loaded[1] if loaded else None
            self._loaded[name] = (stamp, index)
            return index


def _qualified(hit: Hit, repo: str) -> Hit:
    return Hit(replace(hit.chunk, path=f"{repo}\0{hit.chunk.path}"), hit.score)


def _size(index: Index) -> tuple[int, int]:
    return index.files, index.chunks


def _scrubbed(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text
