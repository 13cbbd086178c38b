"""The code index of one repository: BM25 (bm25s) over identifier-split chunks, whole files,
file paths and defined names, the files a query names, optionally fused with static embeddings
(wordllama), and priors from git history (how often each file changed, which files changed
together).

Scorers rank a repository's files for a query, each its own way: by the file's best chunks (its
functions, classes, methods, windows), by the whole file, by the words of its path (its own name
counted twice), by the names it defines, and by whether the query names it (`README: …`,
`index.py`, a path; the dependency manifests for a query about dependencies), by whether it
defines a target that the query runs (`make test` ranks the Makefile with a `test` rule, `npm
run build` the package.json with that script), and for a revert by whether the reverted commit
changed it; with the optional
`wordllama` package, also by the cosine of the query's and the chunks' static embeddings
(weights shipped inside the wheel, never downloaded: without the package the index is BM25
alone). Their rankings are merged by weighted
reciprocal-rank fusion (`core.domain.retrieval.fuse`); the files that changed together with the
first ranking's best files (`git log --name-only`, the last 2,000 commits) and the files that
change most often are two more rankings of that fusion (measured, and off by default: they
lowered the figures). The chunk ranking a prompt receives is the chunks' BM25 ranking (and, with
wordllama, their embedding ranking) fused with their file's rank. Plain words and identifier
parts are stemmed; a compound identifier is also kept whole and unstemmed, so an exact name still
matches exactly.

Each file's chunks and tokens are kept, so `refresh()` re-reads only the files a fetch changed;
the BM25 matrices are then rebuilt from the cached tokens (a fraction of a second for thousands
of chunks). The saved form is gzip-compressed JSON, never a pickle: a data directory is not
trusted code. An index saved in another format is refused with ValueError, and rebuilt.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from core.domain.retrieval import (
    Chunk,
    FileHit,
    FileNames,
    Hit,
    Results,
    change_prior,
    chunk_file,
    cochange_scores,
    cochanges,
    command_targets,
    declared_dependencies,
    file_scores,
    fuse,
    is_manifest,
    name_words,
    path_words,
    ranked,
    runner_of,
    symbol_names,
    text_of,
    tokenize,
)

logger = logging.getLogger(__name__)

# A revert's subject: `Revert "<the reverted commit's subject>"` as git writes it, or prose
_REVERT = re.compile(
    r'^\s*revert(?:s|ed|ing)?\b[\s:]*(?:"(?P<quoted>[^"\n]+)"|(?P<rest>[^:;(\n]+))', re.IGNORECASE
)

FORMAT = 2  # 2: unstemmed identifier wholes, path and name fields, embeddings (1 is refused)
INDEX_FILE = "index.json.gz"
MAX_BYTES = 1_000_000
HISTORY_COMMITS = 2000
EMBED_CHARS = 600  # a chunk's embedding reads its name, path and first characters


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
GENERATED = _words_set("PKG-INFO")  # a source distribution's metadata: the README again
STEMMING = ("parts", "all", "none")


@dataclass(frozen=True)
class Tuning:
    """The retriever's knobs (the benchmark's ablation turns them off one at a time). The
    weights are reciprocal-rank fusion weights of the file rankings, chosen on the docstring
    queries and the older half of this repository's commits (bench/retrieval.py); the rankings
    at weight 0 were measured there and lowered the figures, so they are off unless asked for."""

    chunk_weight: float = 0.5  # files ranked by their best chunks
    file_weight: float = 1.0  # files ranked by whole-file BM25 (path words included)
    path_weight: float = 0.2  # files ranked by the words of their path, their name twice
    symbol_weight: float = 0.1  # files ranked by the names they define
    named_weight: float = 0.3  # the files the query names (`README`, `index.py`, a path)
    run_weight: float = 1.0  # the files defining a target the query runs (`make test`)
    revert_weight: float = 1.0  # for a revert, the files of the commit it reverts
    dependency_weight: float = 1.0  # the manifests declaring a dependency the query changes
    embedding_weight: float = 1.3  # files ranked by their chunks' embeddings (with wordllama)
    embedding_floor: float = 0.2  # the cosine a chunk needs to rank its file
    history_weight: float = 0.0  # files voted for by the earlier commits most like the query
    similar_commits: int = 20
    cochange_weight: float = 0.0  # files changed together with the first ranking's best
    cochange_top: int = 3
    prior_weight: float = 0.0  # files by how often they changed (recent commits most)
    prior_half_life: float = 50.0
    feedback_terms: int = 0  # pseudo-relevance feedback: words added from the best chunks
    feedback_chunks: int = 3
    feedback_weight: float = 0.3
    path_field: bool = True  # each chunk and file also carries its path's words
    stem: str = "parts"  # "parts": words and identifier parts, not wholes; "all"; "none"
    embeddings: bool = True  # embed the chunks at build time when wordllama is installed
    field_floor: float = 0.0  # path and name rankings keep files scoring this share of the best
    rrf_k: int = 60
    chunk_file_weight: float = 1.0  # a chunk's rank fused with its file's fused rank
    chunk_embedding_weight: float = 1.0  # a chunk's embedding rank fused into its rank too
    k1: float = 1.2
    b: float = 0.5  # code files vary in length more than prose; less length normalization


@dataclass
class _File:
    path: str
    chunks: list[Chunk]
    chunk_tokens: list[list[str]]
    tokens: list[str]  # the whole file's
    vectors: np.ndarray | None = None  # one unit embedding per chunk, float16


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

    def scores(
        self, query: list[str], extra: Sequence[str] = (), weight: float = 0.0
    ) -> np.ndarray:
        """BM25 of `query`, plus `weight` times that of the `extra` words (feedback)."""
        total = self._scores(query)
        if extra and weight:
            total = total + weight * self._scores(list(extra))
        return total

    def _scores(self, query: list[str]) -> np.ndarray:
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
    paths_field: _Field
    symbols: _Field
    history: _Field
    chunk_list: list[Chunk]
    chunk_docs: list[list[str]]
    paths: list[str]
    vectors: np.ndarray | None  # the chunks' embeddings, row for row with chunk_list
    prior: list[str]  # files by how often they changed, most first
    pairs: dict[str, dict[str, float]]  # co-changes
    names: FileNames  # the files by how a query may name them
    document_frequency: dict[str, int] = field(default_factory=dict)


class CodeIndex:
    """The searchable index of one working tree (see the module docstring)."""

    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()
        if self.tuning.stem not in STEMMING:
            raise ValueError(f"stem must be one of {STEMMING}")
        self.revision = ""
        self.history_enabled = False
        self.reads = 0  # files read from disk since this object was made (refresh re-reads few)
        self._files: dict[str, _File] = {}
        self._history: list[
            tuple[list[str], list[str]]
        ] = []  # (subject words, paths), newest first
        self._stem = _stemmer()
        self._embedder = _embedder() if self.tuning.embeddings else None
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

    @property
    def embedded(self) -> bool:
        """Whether this index ranks by embeddings too (wordllama installed and chunks embedded)."""
        return self._fields is not None and self._fields.vectors is not None

    def _read(self, root: Path, relative: str) -> int:
        text = _text_of(root / relative)
        if text is None:
            return 0
        self.reads += 1
        chunks = chunk_file(relative, text)
        self._files[relative] = _File(
            relative,
            chunks,
            [self._words(f"{c.name} {c.text}") for c in chunks],
            self._words(text),
            self._embed(chunks),
        )
        return 1

    def _embed(self, chunks: list[Chunk]) -> np.ndarray | None:
        if self._embedder is None or not chunks:
            return None
        texts = [f"{c.name} {path_words(c.path)}\n{c.text[:EMBED_CHARS]}" for c in chunks]
        return self._embedder(texts).astype(np.float16)

    def _read_history(self, root: Path) -> list[tuple[list[str], list[str]]]:
        return [(self._words(subject), paths) for subject, paths in commit_history(root)]

    def _words(self, text: str) -> list[str]:
        mode = self.tuning.stem
        if mode == "parts":
            return tokenize(text, self._stem)
        words = tokenize(text)
        return [self._stem(w) for w in words] if mode == "all" else words

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
        changes = [[p for p in ps if p in self._files] for _, ps in self._history]
        self._fields = _Fields(
            _Field.over(chunk_docs, tuning),
            _Field.over(file_docs, tuning),
            _Field.over([self._words(name_words(p)) for p in paths], tuning),
            _Field.over([self._words(symbol_names(self._files[p].chunks)) for p in paths], tuning),
            _Field.over([words for words, _ in self._history], tuning),
            chunk_list,
            chunk_docs,
            paths,
            self._stacked(paths, len(chunk_list)),
            ranked(change_prior(changes, tuning.prior_half_life)),
            cochanges(changes),
            FileNames(
                paths,
                {p: self._targets(p) for p in paths if runner_of(p)},
                {p: self._dependencies(p) for p in paths if is_manifest(p)},
            ),
        )

    def _targets(self, path: str) -> frozenset[str]:
        return command_targets(path, text_of(self._files[path].chunks))

    def _dependencies(self, path: str) -> frozenset[str]:
        return declared_dependencies(path, text_of(self._files[path].chunks))

    def _stacked(self, paths: list[str], total: int) -> np.ndarray | None:
        """The chunks' embeddings in one matrix, or None unless every file has them."""
        blocks = [self._files[p].vectors for p in paths if self._files[p].chunks]
        if self._embedder is None or not blocks or any(b is None for b in blocks):
            return None
        matrix = np.concatenate([b for b in blocks if b is not None]).astype(np.float32)
        return matrix if len(matrix) == total else None

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
        extra = self._feedback(fields, words)
        weight = self.tuning.feedback_weight
        chunk_scores = fields.chunks.scores(words, extra, weight)
        hits = [Hit(fields.chunk_list[i], float(chunk_scores[i])) for i in _top(chunk_scores, 400)]
        near = self._nearest(fields, query)
        fused = self._fused_files(fields, query, words, extra, hits, near)
        file_order = ranked({p: s for p, s in fused.items() if s > 0})
        chunk_hits = self._rank_chunks(hits, near, file_order)
        best = _best_chunks(near) | _best_chunks(chunk_hits)  # a BM25 chunk first
        return Results(
            chunk_hits[:k],
            [FileHit(p, fused[p], best.get(p) or self._first_chunk(p)) for p in file_order[:k]],
        )

    def _feedback(self, fields: _Fields, words: list[str]) -> list[str]:
        """Pseudo-relevance feedback: the words most typical of the best chunks for `words`
        (frequent there, rare in the index), to find the files that say it otherwise."""
        tuning = self.tuning
        if not tuning.feedback_terms or fields.chunks.model is None:
            return []
        if not fields.document_frequency:  # counted on the first feedback, then kept
            fields.document_frequency = _document_frequency(fields.chunk_docs)
        first = fields.chunks.scores(words)
        counts: dict[str, float] = {}
        total = max(1, fields.chunks.size)
        for rank, i in enumerate(_top(first, tuning.feedback_chunks), start=1):
            for token in set(fields.chunk_docs[i]):
                df = fields.document_frequency.get(token, total)
                counts[token] = counts.get(token, 0.0) + np.log(total / df) / rank
        asked = set(words)
        return [t for t in ranked(counts) if t not in asked][: tuning.feedback_terms]

    def _fused_files(
        self,
        fields: _Fields,
        query: str,
        words: list[str],
        extra: list[str],
        hits: list[Hit],
        near: list[Hit],
    ) -> dict[str, float]:
        """The file rankings fused: by best chunks, whole file, path, defined names, embeddings
        and similar commits first; then the files changed with that ranking's best ones and the
        files that change most."""
        tuning = self.tuning
        weight = tuning.feedback_weight
        rankings = [
            ranked(file_scores(hits)),
            self._order(fields, fields.files.scores(words, extra, weight)),
            self._order(fields, fields.paths_field.scores(words), tuning.field_floor),
            self._order(fields, fields.symbols.scores(words), tuning.field_floor),
            ranked(file_scores(near)) if tuning.embedding_weight else [],
            ranked(self._votes(fields.history.scores(words))) if tuning.history_weight else [],
            fields.names.named(query) if tuning.named_weight else [],
            fields.names.run(query) if tuning.run_weight else [],
            self._reverted(fields, query) if tuning.revert_weight else [],
            fields.names.depends(query) if tuning.dependency_weight else [],
        ]
        weights = [
            tuning.chunk_weight,
            tuning.file_weight,
            tuning.path_weight,
            tuning.symbol_weight,
            tuning.embedding_weight,
            tuning.history_weight,
            tuning.named_weight,
            tuning.run_weight,
            tuning.revert_weight,
            tuning.dependency_weight,
        ]
        first = fuse(rankings, weights, tuning.rrf_k)
        if not (tuning.cochange_weight or tuning.prior_weight):
            return first
        top = ranked(first, tuning.cochange_top)
        together = (
            [p for p in ranked(cochange_scores(top, fields.pairs)) if p in first]
            if tuning.cochange_weight
            else []
        )
        prior = [p for p in fields.prior if p in first] if tuning.prior_weight else []
        return fuse(
            [*rankings, together, prior],
            [*weights, tuning.cochange_weight, tuning.prior_weight],
            tuning.rrf_k,
        )

    @staticmethod
    def _order(fields: _Fields, scores: np.ndarray, floor: float = 0.0) -> list[str]:
        """The files by `scores`, best first; with `floor`, only those scoring at least that
        share of the best (a name field that matched one common word ranks no one)."""
        order = _top(scores, len(fields.paths))
        if floor and order:
            least = floor * float(scores[order[0]])
            order = [i for i in order if scores[i] >= least]
        return [fields.paths[i] for i in order]

    def _nearest(self, fields: _Fields, query: str, n: int = 200) -> list[Hit]:
        """The `n` chunks whose embeddings are nearest the query's (cosine above the floor: an
        unrelated chunk ranks nothing), best first; none without wordllama."""
        if fields.vectors is None or self._embedder is None or not self.tuning.embedding_weight:
            return []
        similarity = fields.vectors @ self._embedder([query])[0].astype(np.float32)
        above = similarity - self.tuning.embedding_floor
        return [Hit(fields.chunk_list[i], float(similarity[i])) for i in _top(above, n)]

    def _reverted(self, fields: _Fields, query: str) -> list[str]:
        """For a query that reverts a commit, the files that commit changed (those still in the
        tree): the commit whose subject it quotes as `git revert` writes it (`Revert "…"`), else
        the earlier commit whose subject is most like the rest of the query; [] for any other
        query, or without history."""
        match = _REVERT.match(query)
        if match is None or not self._history:
            return []
        quoted, rest = match.group("quoted"), match.group("rest") or ""
        commit = None
        if quoted:
            words = self._words(quoted)
            commit = next(
                (i for i, (subject, _) in enumerate(self._history) if subject == words), None
            )
        if commit is None:
            best = _top(fields.history.scores(list(dict.fromkeys(self._words(quoted or rest)))), 1)
            commit = best[0] if best else None
        return [] if commit is None else [p for p in self._history[commit][1] if p in self._files]

    def _votes(self, scores: np.ndarray) -> dict[str, float]:
        """Files by the earlier commits whose subjects are most like the query: each of the
        `similar_commits` best votes its score for the files it touched, shared among them."""
        votes: dict[str, float] = {}
        for i in _top(scores, self.tuning.similar_commits):
            paths = [p for p in self._history[i][1] if p in self._files]
            for path in paths:
                votes[path] = votes.get(path, 0.0) + float(scores[i]) / len(paths) ** 0.5
        return votes

    def _rank_chunks(self, hits: list[Hit], near: list[Hit], file_order: list[str]) -> list[Hit]:
        """Chunks by their own BM25 rank (and embedding rank) fused with their file's rank: a
        strong chunk of a likely file comes before an equally strong one of an unlikely file."""
        tuning = self.tuning
        k = tuning.rrf_k
        file_rank = {p: r for r, p in enumerate(file_order, start=1)}
        scores = fuse(
            [[_key(h.chunk) for h in hits], [_key(h.chunk) for h in near]],
            [1.0, tuning.chunk_embedding_weight],
            k,
        )
        chunks = {_key(h.chunk): h.chunk for h in [*hits, *near]}
        rescored = [
            Hit(
                chunks[key],
                score + tuning.chunk_file_weight / (k + file_rank.get(key[0], len(file_rank))),
            )
            for key, score in scores.items()
            if score > 0
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
        when it cannot be read whole (never a half-read index) or was saved in another format
        or with other stemming (the caller rebuilds it)."""
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
            found = document.get("format") if isinstance(document, dict) else None
            raise ValueError(f"format {found!r}, not {FORMAT}: rebuild the index")
        if document["stem"] != self.tuning.stem:
            raise ValueError("saved with other stemming than asked for")
        self.revision = str(document["revision"])
        self.history_enabled = bool(document["history"])
        self._files = {f.path: f for f in map(_file_from_json, document["files"])}
        for record in self._files.values():  # saved where wordllama was not installed
            if record.vectors is None:
                record.vectors = self._embed(record.chunks)
        self._history = [
            (str(w).split(), [str(p) for p in paths]) for w, paths in document["commits"]
        ]


# --- the optional models -----------------------------------------------------------------------


def _stemmer() -> Callable[[str], str]:
    """English Snowball stemming of one word, cached (the same words recur across a tree)."""
    stemmer = Stemmer.Stemmer("english")
    return lru_cache(maxsize=500_000)(stemmer.stemWord)


Embedder = Callable[[list[str]], np.ndarray]


def embeddings_available() -> bool:
    """Whether the optional `wordllama` package is installed and its shipped model loads."""
    return _embedder() is not None


@lru_cache(maxsize=1)
def _embedder() -> Embedder | None:
    """wordllama's static embeddings (256 dimensions, weights inside the wheel) as a function of
    texts to unit vectors, or None when the package is not installed: the index is then BM25
    alone. Loaded from the package's own folder with downloads disabled, so it never reaches a
    network (wordllama 0.4 would otherwise look for its tokenizer in the wrong folder and fetch
    it)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    except ImportError:
        logger.info("wordllama is not installed: the code index ranks by BM25 alone")
        return None
    finally:  # wordllama calls logging.basicConfig on import: the process's logging is not its
        root.handlers[:] = handlers
        root.setLevel(level)
    try:
        model = wordllama.WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True
        )
    except (OSError, ValueError) as exc:
        logger.warning("wordllama could not load its shipped model (%s): BM25 alone", exc)
        return None

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.embed(texts, norm=True), dtype=np.float32)

    return embed


# --- which files -------------------------------------------------------------------------------


def eligible_files(root: Path) -> list[str]:
    """The relative paths under `root` worth indexing: text files, no vendored or build trees,
    lock files, generated metadata, minified files, symlinks or files over 1 MB."""
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
    if name in LOCK_FILES or name in GENERATED or name.endswith(MINIFIED) or name.endswith(".lock"):
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


def _key(chunk: Chunk) -> tuple[str, int, int]:
    return (chunk.path, chunk.start, chunk.end)


def _document_frequency(docs: Sequence[list[str]]) -> dict[str, int]:
    """In how many of `docs` each token occurs."""
    counts: dict[str, int] = {}
    for doc in docs:
        for token in set(doc):
            counts[token] = counts.get(token, 0) + 1
    return counts


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
    document = {"path": record.path, "chunks": chunks, "tokens": " ".join(record.tokens)}
    if record.vectors is not None:
        document["vectors"] = base64.b64encode(record.vectors.astype("<f2").tobytes()).decode()
    return document


def _file_from_json(item: dict[str, Any]) -> _File:
    path = str(item["path"])
    chunks, tokens = [], []
    for start, end, kind, name, text, words in item["chunks"]:
        chunks.append(Chunk(path, int(start), int(end), str(kind), str(name), str(text)))
        tokens.append(str(words).split())
    return _File(path, chunks, tokens, str(item["tokens"]).split(), _vectors(item, len(chunks)))


def _vectors(item: dict[str, Any], rows: int) -> np.ndarray | None:
    """The file's saved embeddings (float16, one row per chunk), or None when it has none."""
    if "vectors" not in item:
        return None
    flat = np.frombuffer(base64.b64decode(str(item["vectors"]), validate=True), dtype="<f2")
    if rows == 0 or flat.size % rows:
        raise ValueError("embeddings that do not fit the chunks")
    return flat.reshape(rows, flat.size // rows).astype(np.float16)
