"""Benchmark of the code retriever (core/adapters/index.py) against a plain BM25, side by side.

    .venv/bin/python -m bench.retrieval [--quick] [--repo PATH ...] [--until REV] [--since REV]
                                        [--ablation] [--commits-only]

Two query sets:

(a) CodeSearchNet-style, over the source distributions of real packages (downloaded once with
    `pip download --no-deps --no-binary :all:` into bench/.cache/): a function's or method's
    docstring (its first paragraph) is the query, its chunk and its file are the targets, and
    the docstrings of all the sampled functions are removed from the indexed tree, so a query
    cannot match itself.
(b) Task-like, from real git history (by default this repository's, up to `--until`): for each
    commit that changes 1 to 8 indexed files, the index is the tree at the commit's parent with
    its history up to the parent only, the query is the commit's subject and the targets are the
    changed files that existed at the parent. Between consecutive commits the index is brought
    forward with `refresh()` on the files that changed, as `aico pm` does after a fetch. Figures
    are given for all commits and for the older and newer halves apart. The weights were chosen
    on (a) and on the older half of (b) only; the newer half is the held-out measure. Other
    repositories are passed with `--repo` (bench/patchrepos.py makes sixteen held-out ones, and
    six it tuned on, from Debian's patches), and with several the figures are pooled too.
    `--since` keeps only the commits after one, e.g. those made after the weights were chosen;
    `--commits-only` skips (a).

Figures: file-level success@5 (a target among the first 5 files: "Recall@5" in the issue),
the mean share of targets in the first 5, MRR@10 of the first target; function-level Recall@5
and MRR@10 for (a); index build time, size on disk and chunks; query latency p50/p95. The
baseline is BM25 over whole files, lowercased \\w+ words, no identifier splitting, no stemming.
"before" is the retriever as it was before the path, name and embedding rankings (stemming every
token, identifier wholes too). "ours, BM25 only" is what an install without `wordllama` gets.
`--ablation` adds the retriever with one idea taken out (or one rejected idea put in) at a time.
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np

from core.adapters.index import CodeIndex, Tuning, eligible_files, embeddings_available

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).parent / ".cache"
PACKAGES = ("requests==2.32.3", "flask==3.0.3", "click==8.1.7", "rich==13.7.1", "httpx==0.27.0")
MAX_TARGET_FILES = 8
PER_PACKAGE = 60
SEED = 12
PIP_DOWNLOAD = (sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:")

Ranker = Callable[[str], tuple[list[str], list[tuple[str, str]]]]  # files, (path, chunk name)


# --- measures ----------------------------------------------------------------------------------


@dataclass
class Score:
    """The ranks of one method on one query set."""

    file_hit5: list[float] = field(default_factory=list)
    file_share5: list[float] = field(default_factory=list)
    file_rr10: list[float] = field(default_factory=list)
    fn_hit5: list[float] = field(default_factory=list)
    fn_rr10: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    def add_files(self, ranked: Sequence[str], targets: set[str]) -> None:
        top5 = set(ranked[:5])
        self.file_hit5.append(float(bool(top5 & targets)))
        self.file_share5.append(len(top5 & targets) / len(targets))
        self.file_rr10.append(_reciprocal_rank(ranked[:10], targets))

    def add_function(self, ranked: Sequence[tuple[str, str]], target: tuple[str, str]) -> None:
        self.fn_hit5.append(float(target in ranked[:5]))
        self.fn_rr10.append(_reciprocal_rank(ranked[:10], {target}))

    def extend(self, other: Score) -> None:
        """`other`'s queries added to these (figures pooled over several query sets)."""
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def row(self) -> dict[str, str]:
        return {
            "queries": str(len(self.file_hit5)),
            "file success@5": _mean(self.file_hit5),
            "file share@5": _mean(self.file_share5),
            "file MRR@10": _mean(self.file_rr10),
            "function Recall@5": _mean(self.fn_hit5),
            "function MRR@10": _mean(self.fn_rr10),
            "latency p50/p95 ms": _latency(self.latency_ms),
        }


def _reciprocal_rank(ranked: Sequence[object], targets: set) -> float:
    return next((1 / r for r, item in enumerate(ranked, start=1) if item in targets), 0.0)


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "—"


def _latency(values: list[float]) -> str:
    if not values:
        return "—"
    p50, p95 = np.percentile(values, [50, 95])
    return f"{p50:.1f} / {p95:.1f}"


def timed(score: Score, ranker: Ranker, query: str) -> tuple[list[str], list[tuple[str, str]]]:
    started = time.perf_counter()
    result = ranker(query)
    score.latency_ms.append((time.perf_counter() - started) * 1000)
    return result


# --- the methods -------------------------------------------------------------------------------


def ours(index: CodeIndex, tuning: Tuning | None = None) -> Ranker:
    def rank(query: str) -> tuple[list[str], list[tuple[str, str]]]:
        if tuning is not None:
            index.tuning = tuning
        results = index.search(query, k=10)
        return [f.path for f in results.files], [
            (h.chunk.path, h.chunk.name) for h in results.chunks
        ]

    return rank


class PlainBM25:
    """The baseline: BM25 (bm25s defaults) over whole files, lowercased \\w+ words."""

    def __init__(self, root: Path) -> None:
        self.words = {p: _plain(root / p) for p in eligible_files(root)}
        self._rebuild()

    def refresh(self, root: Path, changed: Iterable[str]) -> None:
        for path in changed:
            self.words.pop(path, None)
            if path in set(eligible_files_of(root, [path])):
                self.words[path] = _plain(root / path)
        self._rebuild()

    def _rebuild(self) -> None:
        self.paths = sorted(self.words)
        self.model = bm25s.BM25()
        self.model.index([self.words[p] or [""] for p in self.paths], show_progress=False)

    def rank(self, query: str) -> tuple[list[str], list[tuple[str, str]]]:
        ids = self.model.get_tokens_ids(re.findall(r"\w+", query.lower()))
        if not ids:
            return [], []
        scores = self.model.get_scores(ids)
        order = np.argsort(-scores)[:10]
        return [self.paths[i] for i in order if scores[i] > 0], []


def _plain(path: Path) -> list[str]:
    return re.findall(r"\w+", path.read_text(errors="replace").lower())


def eligible_files_of(root: Path, paths: list[str]) -> list[str]:
    from core.adapters.index import _eligible, _text_of

    return [p for p in paths if _eligible(root, p) and _text_of(root / p) is not None]


# --- (a) docstring queries over package sources ------------------------------------------------


@dataclass(frozen=True)
class DocQuery:
    query: str
    path: str
    name: str  # the chunk name: `function` or `Class.method`


def fetch_sources(specs: Sequence[str]) -> list[Path]:
    """The unpacked sdists (downloaded on first use into bench/.cache/)."""
    CACHE.mkdir(exist_ok=True)
    trees = []
    for spec in specs:
        name, version = spec.split("==")
        tree = CACHE / f"{name}-{version}"
        if not tree.is_dir():
            archive = _download(spec, name, version)
            with tarfile.open(archive) as packed:
                packed.extractall(CACHE / "unpacked", filter="data")
            (CACHE / "unpacked" / archive.name.removesuffix(".tar.gz")).rename(tree)
        trees.append(tree)
    return trees


def _download(spec: str, name: str, version: str) -> Path:
    found = list(CACHE.glob(f"{name}-{version}.tar.gz"))
    if not found:
        subprocess.run(
            [*PIP_DOWNLOAD, spec, "-d", str(CACHE)],
            check=True,
        )
        found = list(CACHE.glob(f"{name}-{version}.tar.gz"))
    return found[0]


def doc_queries(tree: Path, limit: int) -> tuple[list[DocQuery], dict[str, str]]:
    """Up to `limit` sampled queries from the package's own modules (tests and docs left out),
    and the texts of the files whose target docstrings were removed."""
    candidates: list[tuple[DocQuery, tuple[int, int]]] = []
    for path in eligible_files(tree):
        if path.endswith(".py") and not re.search(r"(^|/)(tests?|docs?|examples?)/", path):
            candidates.extend((q, span) for q, span in _documented(tree, path))
    random.Random(SEED).shuffle(candidates)
    chosen = candidates[:limit]
    stripped: dict[str, str] = {}
    for path in sorted({q.path for q, _ in chosen}):
        spans = [span for q, span in chosen if q.path == path]
        stripped[path] = _without_lines(tree / path, spans)
    return [q for q, _ in chosen], stripped


def _documented(tree: Path, path: str) -> Iterable[tuple[DocQuery, tuple[int, int]]]:
    try:
        module = ast.parse((tree / path).read_text())
    except SyntaxError:
        return
    for node, name in _definitions(module):
        doc = node.body[0] if node.body else None
        text = ast.get_docstring(node)
        if not (text and isinstance(doc, ast.Expr) and doc.lineno > node.lineno):
            continue
        first = text.strip().split("\n\n")[0].replace("\n", " ")
        if len(first.split()) >= 4 and len(node.body) > 1:
            yield DocQuery(first, path, name), (doc.lineno, doc.end_lineno or doc.lineno)


def _definitions(
    module: ast.Module,
) -> Iterable[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in module.body:
        if isinstance(node, functions):
            yield node, node.name
        elif isinstance(node, ast.ClassDef):
            for method in node.body:
                if isinstance(method, functions):
                    yield method, f"{node.name}.{method.name}"


def _without_lines(path: Path, spans: list[tuple[int, int]]) -> str:
    drop = {n for first, last in spans for n in range(first, last + 1)}
    lines = path.read_text().splitlines()
    return "\n".join(line for n, line in enumerate(lines, start=1) if n not in drop) + "\n"


def run_docstrings(
    trees: list[Path], per_package: int, search: dict[str, Tuning], rebuilt: dict[str, Tuning]
) -> dict[str, Score]:
    names = [*search, *rebuilt, "plain BM25"]
    scores = {name: Score() for name in names}
    for tree in trees:
        queries, stripped = doc_queries(tree, per_package)
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / tree.name
            shutil.copytree(tree, copy)
            for path, text in stripped.items():
                (copy / path).write_text(text)
            main = CodeIndex.build(copy, history=False)
            indexes = {
                n: CodeIndex.build(copy, history=False, tuning=t) for n, t in rebuilt.items()
            }
            plain = PlainBM25(copy)
        rankers = {n: ours(main, t) for n, t in search.items()}
        rankers |= {n: ours(indexes[n], t) for n, t in rebuilt.items()}
        for q in queries:
            for name, ranker in rankers.items():
                files, chunks = timed(scores[name], ranker, q.query)
                scores[name].add_files(files, {q.path})
                scores[name].add_function(chunks, (q.path, q.name))
            files, _ = timed(scores["plain BM25"], plain.rank, q.query)
            scores["plain BM25"].add_files(files, {q.path})
        main.tuning = Tuning()
    return scores


# --- (b) commit subjects over git history ------------------------------------------------------


@dataclass(frozen=True)
class CommitQuery:
    sha: str
    parent: str
    subject: str
    changed: tuple[str, ...]  # every path the commit touched


def commit_queries(repo: Path, until: str = "HEAD", since: str = "") -> list[CommitQuery]:
    """The non-merge commits along the first parents up to `until` (after `since`, if given),
    oldest first."""
    span = f"{since}..{until}" if since else until
    log = _git(repo, "log", "--first-parent", "--no-merges", "--reverse", "--format=%H %P", span)
    queries = []
    for line in log.splitlines():
        sha, *parents = line.split()
        if len(parents) != 1:
            continue
        subject = _git(repo, "log", "-1", "--format=%s", sha).strip()
        names = _git(repo, "diff", "--name-only", "--no-renames", parents[0], sha).split()
        queries.append(CommitQuery(sha, parents[0], subject, tuple(names)))
    return queries


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


BEFORE = Tuning(
    path_weight=0.0,
    symbol_weight=0.0,
    named_weight=0.0,
    run_weight=0.0,
    revert_weight=0.0,
    dependency_weight=0.0,
    embedding_weight=0.0,
    stem="all",
    embeddings=False,
)
ABLATION: dict[str, Tuning] = {
    "ours without the chunk ranking": Tuning(chunk_weight=0.0),
    "ours without the whole-file ranking": Tuning(file_weight=0.0),
    "ours without the path ranking": Tuning(path_weight=0.0),
    "ours without the defined-names ranking": Tuning(symbol_weight=0.0),
    "ours without the named files": Tuning(named_weight=0.0),
    "ours without the targets a query runs (make test)": Tuning(run_weight=0.0),
    "ours without the reverted commit's files": Tuning(revert_weight=0.0),
    "ours without the manifests of a dependency named": Tuning(dependency_weight=0.0),
    "ours without the embedding floor": Tuning(embedding_floor=0.0),
    "ours without the chunks' embedding rank": Tuning(chunk_embedding_weight=0.0),
    "ours + history votes (weight 0.3)": Tuning(history_weight=0.3),
    "ours + co-change of the top 3 (weight 0.2)": Tuning(cochange_weight=0.2),
    "ours + change-frequency prior (weight 0.1)": Tuning(prior_weight=0.1),
    "ours + feedback, 5 words (weight 0.2)": Tuning(feedback_terms=5, feedback_weight=0.2),
}
REBUILT: dict[str, Tuning] = {
    "ours stemming every token": Tuning(stem="all"),
    "ours without stemming": Tuning(stem="none"),
    "ours without the path words in chunks": Tuning(path_field=False),
}


def methods(ablation: bool) -> tuple[dict[str, Tuning], dict[str, Tuning]]:
    """The variants measured: those that search the main index with other knobs, and those
    that need an index of their own."""
    search = {"ours": Tuning()}
    if embeddings_available():
        search["ours, BM25 only (no wordllama)"] = Tuning(embedding_weight=0.0)
    rebuilt = {"before": BEFORE}
    if ablation:
        search |= ABLATION
        rebuilt |= REBUILT
    return search, rebuilt


def run_commits(
    repo: Path, limit: int | None, ablation: bool, until: str = "HEAD", since: str = ""
) -> tuple[dict[str, list[Score]], dict]:
    """Each method's scores on all, the older (tuning) and the newer (held-out) half of the
    commits (after `since`, if given)."""
    commits = commit_queries(repo, until, since)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "checkout"
        _git(Path(scratch), "clone", "-q", "--no-checkout", str(repo), str(work))
        halves, info = _walk(work, commits, limit, *methods(ablation))
    head = commits[-1].sha[:12] if commits else ""
    return halves, {**info, "head": head}


def _walk(
    work: Path,
    commits: list[CommitQuery],
    limit: int | None,
    search: dict[str, Tuning],
    rebuilt: dict[str, Tuning],
):
    indexes: dict[str, CodeIndex] = {}
    plain: PlainBM25 | None = None
    at = ""
    asked: list[tuple[str, dict[str, tuple[list[str], float]]]] = []
    for commit in [c for c in commits if c.changed]:
        if not at:
            _git(work, "checkout", "-q", "-f", commit.parent)
            indexes = {name: CodeIndex.build(work, tuning=t) for name, t in rebuilt.items()}
            indexes["ours"] = CodeIndex.build(work)
            plain = PlainBM25(work)
        elif at != commit.parent:
            moved = _git(work, "diff", "--name-only", "--no-renames", at, commit.parent).split()
            _git(work, "checkout", "-q", "-f", commit.parent)
            for index in indexes.values():
                index.refresh(work, moved)
            assert plain is not None
            plain.refresh(work, moved)
        at = commit.parent
        present = set(indexes["ours"]._files)
        targets = {p for p in commit.changed if p in present}
        if not targets or len([p for p in commit.changed if _indexable(p)]) > MAX_TARGET_FILES:
            continue
        answers: dict[str, tuple[list[str], float]] = {}
        for name, tuning in search.items():
            answers[name] = _answer(ours(indexes["ours"], tuning), commit.subject)
        for name, tuning in rebuilt.items():
            answers[name] = _answer(ours(indexes[name], tuning), commit.subject)
        assert plain is not None
        answers["plain BM25"] = _answer(plain.rank, commit.subject)
        asked.append((",".join(sorted(targets)), answers))
        if limit and len(asked) >= limit:
            break
    if "ours" in indexes:
        indexes["ours"].tuning = Tuning()
    return _halves(asked), {"queries": len(asked)}


def _indexable(path: str) -> bool:
    return not path.endswith((".lock", ".png", ".jpg", ".gif", ".ico", ".pdf"))


def _answer(ranker: Ranker, query: str) -> tuple[list[str], float]:
    started = time.perf_counter()
    files, _ = ranker(query)
    return files, (time.perf_counter() - started) * 1000


def _halves(asked: list[tuple[str, dict[str, tuple[list[str], float]]]]) -> dict[str, list[Score]]:
    middle = len(asked) // 2
    methods = list(asked[0][1]) if asked else []
    out: dict[str, list[Score]] = {m: [Score(), Score(), Score()] for m in methods}
    for position, (targets, answers) in enumerate(asked):
        for method, (files, took) in answers.items():
            for score in (out[method][0], out[method][1 if position < middle else 2]):
                score.add_files(files, set(targets.split(",")))
                score.latency_ms.append(took)
    return out


# --- index figures -----------------------------------------------------------------------------


def index_figures(root: Path) -> dict[str, str]:
    started = time.perf_counter()
    CodeIndex.build(root, tuning=Tuning(embeddings=False, embedding_weight=0.0))
    bm25_only = time.perf_counter() - started
    started = time.perf_counter()
    index = CodeIndex.build(root)
    took = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        index.save(Path(scratch))
        size = sum(p.stat().st_size for p in Path(scratch).iterdir())
    return {
        "tree": root.name,
        "files": str(index.files),
        "chunks": str(index.chunks),
        "build s (BM25 only)": f"{took:.2f} ({bm25_only:.2f})",
        "on disk MB": f"{size / 1e6:.2f}",
    }


def plain_figures(root: Path) -> dict[str, str]:
    started = time.perf_counter()
    plain = PlainBM25(root)
    return {
        "plain build s": f"{time.perf_counter() - started:.2f}",
        "plain docs": str(len(plain.paths)),
    }


# --- output ------------------------------------------------------------------------------------


def table(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row[h] for h in header) + " |" for row in rows)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m bench.retrieval", description=__doc__.split("\n")[0]
    )
    cli.add_argument("--quick", action="store_true", help="fewer queries (about a minute)")
    cli.add_argument("--repo", action="append", type=Path, help="git repositories for (b)")
    cli.add_argument("--ablation", action="store_true", help="each idea taken out in turn")
    cli.add_argument(
        "--commits-only", action="store_true", help="only (b), the commit subjects: no (a)"
    )
    cli.add_argument("--until", default="HEAD", help="the last commit of (b) (default HEAD)")
    cli.add_argument(
        "--since", default="", help="(b) only on the commits after this one (none: all of them)"
    )
    args = cli.parse_args(argv)
    per_package = 20 if args.quick else PER_PACKAGE
    limit = 30 if args.quick else None
    started = time.perf_counter()

    trees: list[Path] = []
    if not args.commits_only:
        trees = fetch_sources(PACKAGES[:2] if args.quick else PACKAGES)
        docs = run_docstrings(trees, per_package, *methods(args.ablation))
        print(f"## (a) docstring queries: {', '.join(t.name for t in trees)}\n")
        print(table([{"method": m, **s.row()} for m, s in docs.items()]) + "\n")

    pooled: dict[str, Score] = {}
    for repo in args.repo or [ROOT]:
        halves, info = run_commits(repo.resolve(), limit, args.ablation, args.until, args.since)
        for method, (whole, _older, _newer) in halves.items():
            pooled.setdefault(method, Score()).extend(whole)
        after = f" after {args.since[:12]}" if args.since else ""
        print(
            f"## (b) commit subjects: {repo.name}{after} up to {info['head']},"
            f" {info['queries']} commits\n"
        )
        rows = []
        for method, (whole, older, newer) in halves.items():
            for label, score in (
                ("all", whole),
                ("older half (tuning)", older),
                ("newer half (held out)", newer),
            ):
                row = score.row()
                del row["function Recall@5"], row["function MRR@10"]
                rows.append({"method": method, "commits": label, **row})
        print(table(rows) + "\n")
    if len(args.repo or []) > 1:
        print(f"## (b) commit subjects, all {len(args.repo)} repositories pooled\n")
        rows = []
        for method, score in pooled.items():
            row = score.row()
            del row["function Recall@5"], row["function MRR@10"]
            rows.append({"method": method, **row})
        print(table(rows) + "\n")

    print("## the index\n")
    print(
        table([{**index_figures(t), **plain_figures(t)} for t in [*trees, *(args.repo or [ROOT])]])
    )
    print(f"\n(took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
