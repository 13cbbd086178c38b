"""`aico repos search "<query>"`: the chunks and files a task would get, ranked, so an operator
can see why a file was cited and a benchmark can measure the real retriever.

    aico repos search "<query>" [--repo NAME | --path DIR] [--k N] [--json]

`--repo` reads the saved index of a configured repository (`AICO_REPOS`), `--path` indexes a
directory on the fly (with its git history when it is a repository), neither searches every
configured repository's saved index and merges the results by score.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from core.adapters.index import CodeIndex
from core.domain.repos import RepoSpec, index_dir
from core.domain.retrieval import FileHit, Hit


class _Settings(Protocol):
    data_dir: Path
    repos: list[RepoSpec]


class SearchError(Exception):
    """A search that cannot run; the message is the one line the operator sees."""


@dataclass(frozen=True)
class Found:
    """The ranked chunks and files of one search, each with the repository it came from."""

    chunks: list[tuple[str, Hit]]
    files: list[tuple[str, FileHit]]


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def parser() -> argparse.ArgumentParser:
    cli = _OneLineParser(
        prog="aico repos search",
        description="The ranked chunks and files a task would get for a query.",
    )
    cli.add_argument("query", help="what to look for, as a task would say it")
    where = cli.add_mutually_exclusive_group()
    where.add_argument("--repo", metavar="NAME", help="a configured repository (AICO_REPOS)")
    where.add_argument("--path", metavar="DIR", type=Path, help="a directory, indexed now")
    cli.add_argument("--k", type=int, default=8, metavar="N", help="how many of each (default 8)")
    cli.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return cli


def search_main(argv: list[str], settings: _Settings) -> int:
    """Run `aico repos search`; 0 on success, 2 with one line on stderr when it cannot."""
    args = parser().parse_args(argv)
    if args.k < 1:
        print("error: aico repos search: --k must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        found = search(args.query, _indexes(args, settings), args.k)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    took_ms = (time.perf_counter() - started) * 1000
    if args.json:
        print(json.dumps(as_json(args.query, found, took_ms)))
    else:
        print(as_text(found, took_ms))
    return 0


def _indexes(args: argparse.Namespace, settings: _Settings) -> list[tuple[str, CodeIndex]]:
    if args.path is not None:
        if not args.path.is_dir():
            raise SearchError(f"no such directory: {args.path}")
        return [(args.path.resolve().name, CodeIndex.build(args.path))]
    specs = list(settings.repos)
    if args.repo is not None:
        specs = [s for s in specs if s.name == args.repo]
        if not specs:
            known = ", ".join(s.name for s in settings.repos) or "none (AICO_REPOS is empty)"
            raise SearchError(f"no repository named {args.repo} in AICO_REPOS (known: {known})")
    if not specs:
        raise SearchError("no repositories are configured: set AICO_REPOS, or give --path DIR")
    return [(spec.name, _load(settings.data_dir, spec.name)) for spec in specs]


def _load(data_dir: Path, name: str) -> CodeIndex:
    try:
        return CodeIndex.load(index_dir(data_dir, name))
    except FileNotFoundError:
        raise SearchError(
            f"repository {name} is not indexed yet: aico pm indexes it after cloning"
        ) from None
    except ValueError as exc:
        raise SearchError(f"{exc}: aico pm rebuilds it on its next fetch") from None


def search(query: str, indexes: list[tuple[str, CodeIndex]], k: int) -> Found:
    """The `k` best chunks and files over `indexes`, merged by score."""
    chunks: list[tuple[str, Hit]] = []
    files: list[tuple[str, FileHit]] = []
    for name, index in indexes:
        results = index.search(query, k)
        chunks.extend((name, hit) for hit in results.chunks)
        files.extend((name, hit) for hit in results.files)
    chunks.sort(key=lambda item: -item[1].score)
    files.sort(key=lambda item: -item[1].score)
    return Found(chunks[:k], files[:k])


def as_json(query: str, found: Found, took_ms: float) -> dict[str, Any]:
    chunks = [
        {
            "repo": repo,
            "path": hit.chunk.path,
            "start": hit.chunk.start,
            "end": hit.chunk.end,
            "kind": hit.chunk.kind,
            "name": hit.chunk.name,
            "score": round(hit.score, 6),
        }
        for repo, hit in found.chunks
    ]
    files = [{"repo": r, "path": f.path, "score": round(f.score, 6)} for r, f in found.files]
    return {"query": query, "chunks": chunks, "files": files, "took_ms": round(took_ms, 1)}


def as_text(found: Found, took_ms: float) -> str:
    if not found.chunks and not found.files:
        return f"nothing matches ({took_ms:.0f} ms)"
    lines = ["chunks:"]
    for rank, (repo, hit) in enumerate(found.chunks, start=1):
        c = hit.chunk
        where = f"{c.path}:{c.start}-{c.end}"
        lines.append(f"{rank:>3}  {repo}  {where}  {c.kind} {c.name}  {hit.score:.4f}")
    lines.append("files:")
    for rank, (repo, file) in enumerate(found.files, start=1):
        lines.append(f"{rank:>3}  {repo}  {file.path}  {file.score:.4f}")
    lines.append(f"({took_ms:.0f} ms)")
    return "\n".join(lines)
