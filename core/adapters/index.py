"""The code index of one repository: BM25 (bm25s) over stemmed, identifier-split chunks, over
whole files, and over the subjects of the commits that touched each file (git history).

Scorers rank a repository's files for a query: by the file's best chunks (its functions,
classes, methods, windows, each carrying the file's path words) and by the whole file (path words
included); their rankings are merged by weighted reciprocal-rank fusion
(`core.domain.retrieval.fuse`). A third ranking is kept and measured but off by default
(`Tuning.history_weight`): the files touched by the earlier commits whose subjects are most like
the query (`git log --name-only`, the last 2,000 commits). On the benchmark's held-out commits it
lowered every figure (bench/retrieval.py --ablation). The chunk ranking a prompt receives is the
chunk BM25 ranking fused with its file's rank.

Each file's chunks and stemmed tokens are kept, so `refresh()` re-reads only the files a fetch
changed; the BM25 matrices are then rebuilt from the cached tokens (a fraction of a second for
thousands of chunks). The saved form is gzip-compressed JSON, never a pickle: a data directory is
not trusted code.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from core.domain.retrieval import (
    Chunk,
    FileHit,
    Hit,
    Results,
    chunk_file,
    file_scores,
    fuse,
    path_words,
    ranked,
    tokenize,
)

logger = logging.getLogger(__name__)

FORMAT = 1
INDEX_FILE = "index.json.gz"
MAX_BYTES = 1_000_000
HISTORY_COMMITS = 2000


def _words_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


SKIP_DIRS = _words_set(
    ".git .hg .svn node_modules dist build .venv venv env __pycache__ .tox .nox .mypy_cache "
    ".pytest_cache .ruff_cache .import_linter_cache .eggs .cache .idea .vscode .next .nuxt "
    "target vendor third_party bower_components coverage htmlcov site-packages .terraform "
    ".gradle out"
)
LOCK_FILES = _words_set(
    "package-lock.json yarn.lock pnpm-lock.yaml poetry.lock Pipfile.lock Cargo.lock uv.lock "
    "composer.lock Gemfile.lock go.sum npm-shrinkwrap.json pdm.lock"
)
MINIFIED = (".min.js", ".min.css", ".map")


@dataclass(frozen=True)
class Tuning:
    """The retriever's knobs (the benchmark's ablation turns them off one at a time)."""

    chunk_weight: float = 0.5  # files ranked by their best chunks
    file_weight: float = 1.0  # files ranked by whole-file BM25 (path words included)
    history_weight: float = 0.0  # files voted for by the earlier commits most like the query
    # (measured: it lowered every figure on the held-out commits, so it is off unless asked)
    similar_commits: int = 20
    path_field: bool = True  # each chunk and file also carries its path's words
    stem: bool = True
    rrf_k: int = 60
    chunk_file_weight: float = 1.0  # a chunk's rank fused with its file's fused rank
    k1: float = 1.2
    b: float = 0.5  # code files vary in length more than prose; less length normalization


@dataclass
class _File:
    path: str
    chunks: list[Chunk]
    chunk_tokens: list[list[str]]
    tokens: list[str]  # the whole file's


@dataclass
class _Field:
    """One BM25 scorer over a list of token lists."""

    model: Any = None
    size: int = 0

    @classmethod
    def over(cls, docs: Sequence[list[str]], tuning: Tuning) -> _Field:
        if not docs or not any(docs):
            return cls(None, len(docs))
        model = bm25s.BM25(k1=tuning.k1, b=tuning.b)
        model.index([doc or [""] for doc in docs], show_progress=False)
        return cls(model, len(docs))

    def scores(self, query: list[str]) -> np.ndarray:
        if self.model is None or not query:
            return np.zeros(self.size, dtype=np.float32)
        ids = self.model.get_tokens_ids(query)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.model.get_scores(ids), dtype=np.float32)


@dataclass
class _Fields:
    chunks: _Field
    files: _Field
    history: _Field
    chunk_list: list[Chunk]
    paths: list[str]


class CodeIndex:
    """The searchable index of one working tree (see the module docstring)."""

    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()
        self.revision = ""
        self.history_enabled = False
        self.reads = 0  # files read from disk since this object was made (refresh re-reads few)
        self._files: dict[str, _File] = {}
        self._history: list[
            tuple[list[str], list[str]]
        ] = []  # (subject words, paths), newest first
        self._stemmer = Stemmer.Stemmer("english")
        self._fields: _Fields | None = None

    # --- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, root: Path, history: bool = True, tuning: Tuning | None = None) -> CodeIndex:
        """Index the working tree under `root`; with `history`, also the subjects of its last
        commits (nothing when `root` is no git repository)."""
        index = cls(tuning)
        for relative in eligible_files(root):
            index._read(root, relative)
        index.history_enabled = history
        if history:
            index._history = index._read_history(root)
        index._rebuild()
        logger.info("indexed %d files, %d chunks under %s", index.files, index.chunks, root)
        return index

    def refresh(self, root: Path, changed: Iterable[str]) -> int:
        """Re-read only the `changed` paths (relative to `root`; a path gone or no longer
        eligible is dropped), read the history again, and rebuild the scorers from the cached
        tokens. Returns how many files were read."""
        read = 0
        for relative in sorted({_posix(p) for p in changed}):
            self._files.pop(relative, None)
            if _eligible(root, relative):
                read += self._read(root, relative)
        if self.history_enabled:
            self._history = self._read_history(root)
        self._rebuild()
        return read

    def _read(self, root: Path, relative: str) -> int:
        text = _text_of(root / relative)
        if text is None:
            return 0
        self.reads += 1
        chunks = chunk_file(relative, text)
        self._files[relative] = _File(
            relative, chunks, [self._words(f"{c.name} {c.text}") for c in chunks], self._words(text)
        )
        return 1

    def _read_history(self, root: Path) -> list[tuple[list[str], list[str]]]:
        return [(self._words(subject), paths) for subject, paths in commit_history(root)]

    def _words(self, text: str) -> list[str]:
        words = tokenize(text)
        return list(self._stemmer.stemWords(words)) if self.tuning.stem else words

    def _rebuild(self) -> None:
        tuning = self.tuning
        paths = sorted(self._files)
        chunk_list: list[Chunk] = []
        chunk_docs: list[list[str]] = []
        file_docs: list[list[str]] = []
        for path in paths:
            record = self._files[path]
            where = self._words(path_words(path)) if tuning.path_field else []
            chunk_list.extend(record.chunks)
            chunk_docs.extend(tokens + where for tokens in record.chunk_tokens)
            file_docs.append(record.tokens + where)
        self._fields = _Fields(
            _Field.over(chunk_docs, tuning),
            _Field.over(file_docs, tuning),
            _Field.over([words for words, _ in self._history], tuning),
            chunk_list,
            paths,
        )

    # --- searching -----------------------------------------------------------------------------

    @property
    def files(self) -> int:
        return len(self._files)

    @property
    def chunks(self) -> int:
        return sum(len(f.chunks) for f in self._files.values())

    def search(self, query: str, k: int = 8) -> Results:
        """The `k` best chunks and the `k` best files for `query`."""
        fields = self._fields
        words = list(dict.fromkeys(self._words(query)))
        if fields is None or not words or not fields.paths:
            return Results([], [])
        chunk_scores = fields.chunks.scores(words)
        hits = [Hit(fields.chunk_list[i], float(chunk_scores[i])) for i in _top(chunk_scores, 400)]
        fused = self._fused_files(fields, words, hits)
        file_order = ranked({p: s for p, s in fused.items() if s > 0})
        chunk_hits = self._rank_chunks(hits, file_order)
        best = _best_chunks(chunk_hits)
        return Results(
            chunk_hits[:k],
            [FileHit(p, fused[p], best.get(p) or self._first_chunk(p)) for p in file_order[:k]],
        )

    def _fused_files(self, fields: _Fields, words: list[str], hits: list[Hit]) -> dict[str, float]:
        """The three file rankings (by best chunks, whole file, similar commits), fused."""
        tuning = self.tuning
        whole = fields.files.scores(words)
        by_file = [fields.paths[i] for i in _top(whole, len(fields.paths))]
        votes = self._votes(fields.history.scores(words)) if tuning.history_weight else {}
        return fuse(
            [ranked(file_scores(hits)), by_file, ranked(votes)],
            [tuning.chunk_weight, tuning.file_weight, tuning.history_weight],
            tuning.rrf_k,
        )

    def _votes(self, scores: np.ndarray) -> dict[str, float]:
        """Files by the earlier commits whose subjects are most like the query: each of the
        `similar_commits` best votes its score for the files it touched, shared among them."""
        votes: dict[str, float] = {}
        for i in _top(scores, self.tuning.similar_commits):
            paths = [p for p in self._history[i][1] if p in self._files]
            for path in paths:
                votes[path] = votes.get(path, 0.0) + float(scores[i]) / len(paths) ** 0.5
        return votes

    def _rank_chunks(self, hits: list[Hit], file_order: list[str]) -> list[Hit]:
        """Chunks by their own BM25 rank fused with their file's rank: a strong chunk of a
        likely file comes before an equally strong one of an unlikely file."""
        file_rank = {p: r for r, p in enumerate(file_order, start=1)}
        k = self.tuning.rrf_k
        weight = self.tuning.chunk_file_weight
        rescored = [
            Hit(h.chunk, 1 / (k + r) + weight / (k + file_rank.get(h.chunk.path, len(file_rank))))
            for r, h in enumerate(hits, start=1)
        ]
        return sorted(rescored, key=lambda h: -h.score)

    def _first_chunk(self, path: str) -> Chunk:
        chunks = self._files[path].chunks
        return chunks[0] if chunks else Chunk(path, 1, 1, "module", path, "")

    # --- saving --------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the index under `directory`: into a temporary file beside the index first,
        flushed to disk, then renamed over the old one. The rename of one file is atomic (a
        swap of two directories is not), so a crash mid-save leaves the previous index whole."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / INDEX_FILE
        temporary = directory / f".{INDEX_FILE}.{os.getpid()}.tmp"
        payload = json.dumps(self._to_json(), separators=(",", ":")).encode()
        with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
            out.write(payload)
        with open(temporary, "rb") as done:
            os.fsync(done.fileno())
        os.replace(temporary, target)

    @classmethod
    def load(cls, directory: Path, tuning: Tuning | None = None) -> CodeIndex:
        """The index saved under `directory`. FileNotFoundError when there is none; ValueError
        when it cannot be read whole (never a half-read index)."""
        target = directory / INDEX_FILE
        if not target.is_file():
            raise FileNotFoundError(f"no saved code index at {directory}")
        try:
            with gzip.open(target, "rb") as data:
                document = json.loads(data.read())
            index = cls(tuning)
            index._from_json(document)
        except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"the code index at {directory} is corrupt: {exc}") from None
        index._rebuild()
        return index

    def _to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "revision": self.revision,
            "history": self.history_enabled,
            "stem": self.tuning.stem,
            "files": [_file_json(f) for f in self._files.values()],
            "commits": [[" ".join(words), paths] for words, paths in self._history],
        }

    def _from_json(self, document: dict[str, Any]) -> None:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("unknown format")
        if bool(document["stem"]) != self.tuning.stem:
            raise ValueError("saved with other stemming than asked for")
        self.revision = str(document["revision"])
        self.history_enabled = bool(document["history"])
        self._files = {f.path: f for f in map(_file_from_json, document["files"])}
        self._history = [
            (str(w).split(), [str(p) for p in paths]) for w, paths in document["commits"]
        ]


# --- which files -------------------------------------------------------------------------------


def eligible_files(root: Path) -> list[str]:
    """The relative paths under `root` worth indexing: text files, no vendored or build trees,
    lock files, minified files, symlinks or files over 1 MB."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d))
        base = Path(folder)
        for name in sorted(names):
            relative = (base / name).relative_to(root).as_posix()
            if _eligible(root, relative):
                found.append(relative)
    return found


def _skipped_dir(name: str) -> bool:
    return name in SKIP_DIRS or name.endswith(".egg-info")


def _eligible(root: Path, relative: str) -> bool:
    parts = relative.split("/")
    if any(_skipped_dir(p) for p in parts[:-1]) or ".." in parts:
        return False
    name = parts[-1]
    if name in LOCK_FILES or name.endswith(MINIFIED) or name.endswith(".lock"):
        return False
    path = root / relative
    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_BYTES
    except OSError:
        return False


def _text_of(path: Path) -> str | None:
    """The file's text, or None for a binary (a NUL byte in its first 8 KB) or unreadable one."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    text = data.decode("utf-8", errors="replace")
    lines = text.count("\n") + 1
    if len(text) > 5000 and len(text) / lines > 500:  # minified or generated on one line
        return None
    return text


def commit_history(root: Path, limit: int = HISTORY_COMMITS) -> list[tuple[str, list[str]]]:
    """(subject, paths changed) of the last `limit` commits reachable from HEAD, merges left
    out; [] when `root` is no git repository."""
    import git  # GitPython; imported here so that an index without history does not need it

    try:
        repo = git.Repo(root)
        log = repo.git.log(f"-n{limit}", "--no-merges", "--name-only", "--format=%x00%s")
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError):
        return []
    commits = []
    for entry in log.split("\0")[1:]:
        subject, _, names = entry.partition("\n")
        commits.append((subject, [n for n in names.split("\n") if n]))
    return commits


# --- helpers -----------------------------------------------------------------------------------


def _posix(path: str) -> str:
    return Path(path).as_posix().lstrip("/")


def _top(scores: np.ndarray, n: int) -> list[int]:
    positive = np.flatnonzero(scores > 0)
    if len(positive) > n:
        positive = positive[np.argpartition(-scores[positive], n)[:n]]
    return sorted(positive.tolist(), key=lambda i: -scores[i])


def _best_chunks(hits: list[Hit]) -> dict[str, Chunk]:
    best: dict[str, Chunk] = {}
    for hit in hits:
        best.setdefault(hit.chunk.path, hit.chunk)
    return best


def _file_json(record: _File) -> dict[str, Any]:
    chunks = [
        [c.start, c.end, c.kind, c.name, c.text, " ".join(t)]
        for c, t in zip(record.chunks, record.chunk_tokens, strict=True)
    ]
    return {"path": record.path, "chunks": chunks, "tokens": " ".join(record.tokens)}


def _file_from_json(item: dict[str, Any]) -> _File:
    path = str(item["path"])
    chunks, tokens = [], []
    for start, end, kind, name, text, words in item["chunks"]:
        chunks.append(Chunk(path, int(start), int(end), str(kind), str(name), str(text)))
        tokens.append(str(words).split())
    return _File(path, chunks, tokens, str(item["tokens"]).split())
