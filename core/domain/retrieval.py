"""Code retrieval, the pure part: identifiers split into words, files cut into chunks, file ranks
from chunk ranks, and the best chunks fitted into a prompt's budget.

A task's question speaks of "the heartbeat reader" while the code says `read_heartbeats`: the
tokenizer keeps the whole identifier and its parts, so both meet. Python files are chunked along
their functions, classes and methods (`ast`), so a hit points at a definition rather than at an
arbitrary window; other files, and Python that does not parse, get overlapping line windows.
Stemming is left to the adapter (the stemmer is a C library).
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import tomllib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TypeVar

WINDOW_LINES = 40
WINDOW_OVERLAP = 10
LARGE_CLASS_LINES = 80  # a longer class is chunked as its header, its methods apart
CHARS_PER_TOKEN = 4


def _words_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH_STOPWORDS = _words_set(
    "a about above after again against all am an and any are as at be because been before being "
    "below between both but by can could did do does doing down during each few for from further "
    "had has have having he her here hers herself him himself his how i if in into is it its "
    "itself just me more most my myself no nor not now of off on once only or other our ours "
    "ourselves out "
    "over own same she should so some such than that the their theirs them themselves then there "
    "these they this those through to too under until up very was we were what when where which "
    "while who whom why will with would you your yours yourself yourselves also one two it's its "
    "s t via per may might must shall us"
)
CODE_STOPWORDS = _words_set(
    "def class return import from as self cls none true false null nil pass yield lambda elif else "
    "try except finally raise with async await global nonlocal del assert is in not and or if for "
    "while break continue var let const function new this typeof instanceof void public private "
    "protected static final int str bool float dict list tuple set any object args kwargs "
    "py js ts rs go sh md txt json yaml yml toml cfg ini http https www com org"
)
STOPWORDS = ENGLISH_STOPWORDS | CODE_STOPWORDS

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_PYTHON = (".py", ".pyi")
Key = TypeVar("Key", bound=Hashable)  # what rank fusion ranks: paths, chunk spans


@dataclass(frozen=True)
class Chunk:
    """A span of one file (1-based lines, inclusive) that retrieval ranks and a prompt quotes."""

    path: str
    start: int
    end: int
    kind: str  # "function" | "class" | "method" | "module" | "window"
    name: str
    text: str


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


@dataclass(frozen=True)
class FileHit:
    path: str
    score: float
    best: Chunk


@dataclass(frozen=True)
class Results:
    chunks: list[Hit]
    files: list[FileHit]


# --- words -------------------------------------------------------------------------------------


def split_identifier(word: str) -> list[str]:
    """`parseHTTPResponse` -> parsehttpresponse, parse, http, response; `read_beats` -> read_beats,
    read, beats. The whole identifier comes first, lowercased; its parts follow when it has more
    than one."""
    return list(_split(word))


@lru_cache(maxsize=200_000)
def _split(word: str) -> tuple[str, ...]:
    whole = word.strip("_").lower()
    if not whole:
        return ()
    parts = [p.lower() for piece in word.split("_") for p in _PART.findall(piece)]
    return (whole, *parts) if len(parts) > 1 else (whole,)


def tokenize(text: str, stem: Callable[[str], str] | None = None) -> list[str]:
    """The words of `text` for BM25: identifiers split (and kept whole), lowercased; English and
    code-keyword stopwords, one-letter words and numbers of more than 4 digits (ids, timestamps,
    data) dropped. With `stem`, plain words and the parts of identifiers are stemmed but a
    compound identifier's whole is kept as written: `heartbeats` meets `heartbeat`, while
    `read_heartbeats` stays one exact name that only itself matches."""
    tokens: list[str] = []
    for word in _WORD.findall(text):
        tokens.extend(_kept(word) if stem is None else _stemmed(word, stem))
    return tokens


@lru_cache(maxsize=200_000)
def _stemmed(word: str, stem: Callable[[str], str]) -> tuple[str, ...]:
    kept = _kept(word)
    if kept and _compound(word) and kept[0] == _split(word)[0]:
        return (kept[0], *(stem(t) for t in kept[1:]))
    return tuple(stem(t) for t in kept)


def _compound(word: str) -> bool:
    return len(_split(word)) > 1


@lru_cache(maxsize=200_000)
def _kept(word: str) -> tuple[str, ...]:
    if word.isdigit() and len(word) > 4:
        return ()
    return tuple(t for t in _split(word) if len(t) > 1 and t not in STOPWORDS)


def path_words(path: str) -> str:
    """A path as text for the tokenizer: `core/adapters/sqlite_store.py` -> `core adapters
    sqlite_store py`, so a file is found by the words of its name."""
    return re.sub(r"[/\\.\-]+", " ", path)


def name_words(path: str) -> str:
    """A path as text that weighs the file's own name twice over its folders: a subject that
    says "the stack" or "the ports" names `stack.py` or `ports.py` more than a folder of them."""
    name = _basename(path)
    return f"{path_words(path)} {path_words(name)}"


# Files that declare a project's dependencies, and words that say a change is about them
# ("orjson in the dependencies", "Bump requests from 2.31 to 2.32", "py-spy is the bench extra").
MANIFESTS = _words_set(
    "pyproject.toml setup.py setup.cfg Pipfile environment.yml environment.yaml package.json "
    "Cargo.toml go.mod Gemfile pom.xml build.gradle build.gradle.kts composer.json mix.exs "
    "Package.swift DESCRIPTION"
)
DEPENDENCY_WORDS = _words_set(
    "dependency dependencies deps dep requirement requirements extra extras pin pinned pins "
    "bump bumps bumped bumping"
)
_MENTION = re.compile(r"\.?[A-Za-z0-9_][A-Za-z0-9_./\-]*")
# A query that names a dependency and says it changes one ("ease asn1 version from 0.12.1 to
# 0.12", "Remove run-time dependency on cffi", "Move sphinxcontrib modules to extras_require")
# names the manifests that declare it: DEPENDENCY_WORDS, these, or a version number, with a
# name that a manifest declares (`declared_dependencies`).
VERSION_WORDS = _words_set(
    "version versions require requires required upgrade upgrades upgraded downgrade "
    "downgraded depend depends depending"
)
_VERSION = re.compile(r"\bv?\d+\.\d+")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:[<>=!~;@,(]|$)")
_SETUP_LISTS = re.compile(
    r"\b(?:install_requires|extras_require|setup_requires|tests_require)\s*=\s*(\[[^\]]*\]|\{[^}]*\})"
)
_QUOTED = re.compile(r"[\"']([^\"'\n]+)[\"']")
_NPM_DEPENDENCIES = ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")
_SETUP_CFG_KEYS = ("install_requires", "setup_requires", "tests_require", "extras_require")

# A command that runs a target names the file that defines it: `make test` the Makefile with a
# `test` rule, `npm run build` (or `yarn build`, `pnpm test`) the package.json with that script,
# `just lint` the justfile with that recipe. The tool's name alone names nothing ("make the
# parser faster"): only a word after it that the file defines as a target.
_RUNS = re.compile(
    r"\b(make|just|npm|yarn|pnpm)\s+(?:run\s+)?(?:-{1,2}[\w-]+\s+)*([A-Za-z0-9_][\w:.\-/]*)",
    re.IGNORECASE,
)
_RUNNERS = {"make": "make", "just": "just", "npm": "npm", "yarn": "npm", "pnpm": "npm"}
_MAKE_RULE = re.compile(r"^([^\s:=#][^:=#\n]*?)[ \t]*::?(?![=:])", re.MULTILINE)
_JUST_RECIPE = re.compile(r"^@?([A-Za-z_][\w-]*)[^:=\n]*:(?!=)", re.MULTILINE)


def runner_of(path: str) -> str:
    """Which command runs the targets a file defines ("make", "just", "npm"), "" if none."""
    name = _basename(path).lower()
    if name in ("makefile", "gnumakefile") or name.endswith(".mk"):
        return "make"
    if name in ("justfile", ".justfile"):
        return "just"
    return "npm" if name == "package.json" else ""


def command_targets(path: str, text: str) -> frozenset[str]:
    """The targets that a file defines for its command (runner_of): a Makefile's rules and
    .PHONY names (not its special `.X` or pattern `%` rules), a justfile's recipes, a
    package.json's scripts."""
    runner = runner_of(path)
    found: set[str] = set()
    if runner == "make":
        for match in _MAKE_RULE.finditer(text):
            head = match.group(1)
            names = head.split()
            if head.startswith(".PHONY"):
                found.update(text[match.end() :].split("\n", 1)[0].split())
                continue
            found.update(n for n in names if n[0] != "." and "%" not in n and "$" not in n)
    elif runner == "just":
        found.update(m.group(1) for m in _JUST_RECIPE.finditer(text))
    elif runner == "npm":
        try:
            scripts = json.loads(text).get("scripts", {})
        except (ValueError, AttributeError):
            return frozenset()
        if isinstance(scripts, dict):
            found.update(str(k) for k in scripts)
    return frozenset(found)


def is_manifest(path: str) -> bool:
    """Whether the file declares dependencies (MANIFESTS, requirements*.txt)."""
    name = _basename(path)
    return name in MANIFESTS or (name.startswith("requirements") and name.endswith(".txt"))


def dependency_name(name: str) -> str:
    """A dependency's name compared as package indexes do: lower case, `_` and `.` as `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies(path: str, text: str) -> frozenset[str]:
    """The names of the dependencies a manifest declares (dependency_name'd): pyproject.toml's
    dependency lists and tables (PEP 621, Poetry, build requires), setup.cfg's and setup.py's
    install/extras/setup/tests requirements, requirements*.txt, Pipfile, Cargo.toml's
    dependency tables and package.json's dependency objects; none for other files or for a
    manifest that does not parse."""
    name = _basename(path)
    found: list[str] = []
    if name == "package.json":
        try:
            data = json.loads(text)
        except ValueError:
            return frozenset()
        if isinstance(data, dict):
            for key in _NPM_DEPENDENCIES:
                block = data.get(key)
                if isinstance(block, dict):
                    found.extend(str(k).rsplit("/", 1)[-1] for k in block)
    elif name in ("pyproject.toml", "Cargo.toml", "Pipfile"):
        found.extend(_toml_dependencies(text, pipfile=name == "Pipfile"))
    elif name == "setup.cfg":
        found.extend(_setup_cfg_dependencies(text))
    elif name == "setup.py":
        for block in _SETUP_LISTS.findall(text):
            for value in _QUOTED.findall(block):
                match = _REQUIREMENT.match(value)
                if match:
                    found.append(match.group(1))
    elif name.startswith("requirements") and name.endswith(".txt"):
        found.extend(_requirement_names(text.splitlines()))
    return frozenset(dependency_name(n) for n in found)


def _requirement_names(lines: Iterable[str]) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = _REQUIREMENT.match(line) if line and not line.startswith("-") else None
        if match:
            names.append(match.group(1))
    return names


def _toml_dependencies(text: str, pipfile: bool = False) -> list[str]:
    """Dependencies of a TOML manifest: under every key that says dependencies (or `requires`,
    and a Pipfile's `packages`), the requirement strings of its lists and the keys of its tables
    (`asn1 = "0.12"`, `pem = { version = "1" }`), extras' and groups' lists included."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeError):
        return []
    names: list[str] = []

    def declared(value: object) -> None:
        if isinstance(value, list):
            names.extend(_requirement_names(v for v in value if isinstance(v, str)))
        elif isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(inner, list):
                    declared(inner)  # an extra's or a group's requirements
                elif isinstance(inner, (str, dict)) and key.lower() != "python":
                    names.append(key)

    def walk(table: dict, top: bool) -> None:
        for key, value in table.items():
            lower = key.lower()
            pipfile_packages = pipfile and top and "packages" in lower
            if "depend" in lower or lower == "requires" or pipfile_packages:
                declared(value)
            elif isinstance(value, dict):
                walk(value, False)

    walk(data, True)
    return names


def _setup_cfg_dependencies(text: str) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    lines: list[str] = []
    for section in parser.sections():
        for key, value in parser.items(section):
            if key in _SETUP_CFG_KEYS or section == "options.extras_require":
                lines.extend(value.replace(";", "\n;").splitlines())
    return _requirement_names(lines)


def text_of(chunks: Iterable[Chunk]) -> str:
    """A file's text again from its chunks (overlapping windows, or definitions and the module
    chunks between them), line by line."""
    lines: dict[int, str] = {}
    for chunk in chunks:
        for number, line in enumerate(chunk.text.split("\n"), chunk.start):
            lines.setdefault(number, line)
    return "\n".join(lines[n] for n in sorted(lines))


class FileNames:
    """The files of a tree by how a query may name them, to find the ones it names at once."""

    def __init__(
        self,
        paths: Iterable[str],
        targets: Mapping[str, frozenset[str]] | None = None,
        dependencies: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.by_name: dict[str, list[str]] = {}  # lower-case file name -> paths
        # a dependency's name (and a family's: `sphinxcontrib` of two `sphinxcontrib-*` or more)
        # -> the manifests that declare it (`dependencies`: path -> declared_dependencies)
        self.by_dependency: dict[str, set[str]] = {}
        families: dict[str, set[str]] = {}
        for path, declared in (dependencies or {}).items():
            for name in declared:
                self.by_dependency.setdefault(name, set()).add(path)
                if "-" in name:
                    families.setdefault(name.split("-", 1)[0], set()).add(name)
        for family, members in families.items():
            if len(members) > 1:
                for member in members:
                    self.by_dependency.setdefault(family, set()).update(self.by_dependency[member])
        # (runner, target) -> the files that define it (`targets`: path -> command_targets)
        self.by_target: dict[tuple[str, str], list[str]] = {}
        for path, defined in (targets or {}).items():
            for target in defined:
                self.by_target.setdefault((runner_of(path), target), []).append(path)
        self.by_stem: dict[str, list[str]] = {}  # a distinct name without its extension -> paths
        self.manifests: list[str] = []  # dependency manifests and requirements files
        for path in paths:
            name = _basename(path)
            if is_manifest(path):
                self.manifests.append(path)
            self.by_name.setdefault(name.lower(), []).append(path)
            stem = name if name.startswith(".") else name.split(".", 1)[0]
            if _distinct_name(stem):
                self.by_stem.setdefault(stem, []).append(path)

    def named(self, query: str) -> list[str]:
        """The files the query names, most plainly named first: by their path (or its tail, as
        in `adapters/index.py`), by their file name (`index.py`), or by a name without its
        extension that cannot be an ordinary word (`README`, `Makefile`, `sqlite_store`,
        `UserService`: with a capital, an underscore, a dash or a digit inside, or a capital
        and "file" at the end, written exactly so). A plain lower-case word (`index`) names no
        file: the path and whole-file rankings weigh it already. Last, a query about
        dependencies (DEPENDENCY_WORDS) names the dependency manifests. Among the files named
        alike, the shallower come first (the top-level README before a folder's)."""
        strength: dict[str, int] = {}
        for mention in {m.rstrip("./-") for m in _MENTION.findall(query)} - {""}:
            lower = mention.lower()
            tail = lower.rsplit("/", 1)[-1]
            for path in self.by_name.get(tail, ()):
                if "/" in lower:
                    if path.lower() == lower or path.lower().endswith("/" + lower):
                        strength[path] = 0
                elif "." in tail:
                    strength[path] = min(strength.get(path, 1), 1)
            for path in self.by_stem.get(mention, ()):
                strength.setdefault(path, 2)
            if lower in DEPENDENCY_WORDS:
                for path in self.manifests:
                    strength.setdefault(path, 3)
        return sorted(strength, key=lambda p: (strength[p], p.count("/"), p))

    def depends(self, query: str) -> list[str]:
        """The manifests that declare a dependency the query names, when it says the change is
        about a dependency (DEPENDENCY_WORDS, VERSION_WORDS, or a version number: "allow pem
        version 1.0", "Drop dependency on typing_extensions"), the shallower first."""
        mentions = {m.rstrip("./-") for m in _MENTION.findall(query)} - {""}
        words = {part.lower() for m in mentions for part in re.split(r"[_./-]", m)} | {
            m.lower() for m in mentions
        }
        if not (words & (DEPENDENCY_WORDS | VERSION_WORDS) or _VERSION.search(query)):
            return []
        found: set[str] = set()
        for mention in mentions:
            found.update(self.by_dependency.get(dependency_name(mention), ()))
        return sorted(found, key=lambda p: (p.count("/"), p))

    def run(self, query: str) -> list[str]:
        """The files that define a target the query runs (`make test`, `npm run build`, `just
        lint`: see _RUNS), the shallower first."""
        found: set[str] = set()
        for runner, target in _RUNS.findall(query):
            key = (_RUNNERS[runner.lower()], target.rstrip(".,;:)/-"))
            found.update(self.by_target.get(key, ()))
        return sorted(found, key=lambda p: (p.count("/"), p))


def _distinct_name(stem: str) -> bool:
    """Whether a file name without its extension is unlike an ordinary word of a sentence."""
    inner = any(c.isupper() or c.isdigit() or c in "_-" for c in stem[1:])
    return inner or (stem[:1].isupper() and stem.endswith("file"))  # Makefile, Procfile


def symbol_names(chunks: Iterable[Chunk]) -> str:
    """The names a file defines (functions, classes, methods), as text for their own field."""
    return " ".join(c.name for c in chunks if c.kind in ("function", "class", "method"))


# --- chunks ------------------------------------------------------------------------------------


def chunk_file(path: str, text: str) -> list[Chunk]:
    """The chunks of one file: definitions for Python that parses, line windows otherwise."""
    if path.endswith(_PYTHON):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError):
            return windows(path, text)
        return _python_chunks(path, text.splitlines(), tree)
    return windows(path, text)


def windows(
    path: str, text: str, size: int = WINDOW_LINES, overlap: int = WINDOW_OVERLAP
) -> list[Chunk]:
    """Fixed windows of `size` lines, each overlapping the previous one by `overlap` lines."""
    lines = text.splitlines()
    step = max(1, size - overlap)
    chunks = []
    for first in range(0, max(1, len(lines) - overlap), step):
        last = min(len(lines), first + size)
        body = "\n".join(lines[first:last])
        if body.strip():
            chunks.append(Chunk(path, first + 1, last, "window", _basename(path), body))
        if last == len(lines):
            break
    return chunks


def _python_chunks(path: str, lines: list[str], tree: ast.Module) -> list[Chunk]:
    chunks: list[Chunk] = []
    covered: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            chunks.append(_span(path, lines, node, "function", node.name))
        elif isinstance(node, ast.ClassDef):
            chunks.extend(_class_chunks(path, lines, node))
        else:
            continue
        covered.update(range(_first_line(node), _last_line(node) + 1))
    return _module_chunks(path, lines, covered) + chunks


def _class_chunks(path: str, lines: list[str], node: ast.ClassDef) -> list[Chunk]:
    methods = [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    whole = _span(path, lines, node, "class", node.name)
    if methods and whole.end - whole.start + 1 > LARGE_CLASS_LINES:
        header_end = _first_line(methods[0]) - 1
        whole = _cut(lines, whole, header_end)
    named = (_span(path, lines, m, "method", f"{node.name}.{m.name}") for m in methods)
    return [whole, *named]


def _module_chunks(path: str, lines: list[str], covered: set[int]) -> list[Chunk]:
    """The lines outside every top-level definition (imports, docstring, globals): one chunk
    per contiguous run that holds code."""
    chunks, run = [], []
    for number in range(1, len(lines) + 2):
        if number <= len(lines) and number not in covered:
            run.append(number)
            continue
        if run and any(lines[n - 1].strip() for n in run):
            first, last = _trim(lines, run[0], run[-1])
            body = "\n".join(lines[first - 1 : last])
            chunks.append(Chunk(path, first, last, "module", _module_name(path), body))
        run = []
    return chunks


def _span(path: str, lines: list[str], node: ast.stmt, kind: str, name: str) -> Chunk:
    first, last = _first_line(node), _last_line(node)
    return Chunk(path, first, last, kind, name, "\n".join(lines[first - 1 : last]))


def _cut(lines: list[str], chunk: Chunk, end: int) -> Chunk:
    _, end = _trim(lines, chunk.start, max(chunk.start, end))
    return replace(chunk, end=end, text="\n".join(lines[chunk.start - 1 : end]))


def _trim(lines: list[str], first: int, last: int) -> tuple[int, int]:
    while first < last and not lines[first - 1].strip():
        first += 1
    while last > first and not lines[last - 1].strip():
        last -= 1
    return first, last


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _last_line(node: ast.stmt) -> int:
    return node.end_lineno or node.lineno


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _module_name(path: str) -> str:
    return _basename(path).rsplit(".", 1)[0]


# --- ranks -------------------------------------------------------------------------------------


def file_scores(hits: Iterable[Hit], share: float = 0.3, depth: int = 3) -> dict[str, float]:
    """A file's score from its chunks: the best chunk's score plus `share` of each of the next
    `depth - 1` (a file with several matching definitions beats one lucky chunk)."""
    by_file: dict[str, list[float]] = {}
    for hit in hits:
        by_file.setdefault(hit.chunk.path, []).append(hit.score)
    return {path: _aggregate(sorted(s, reverse=True), share, depth) for path, s in by_file.items()}


def _aggregate(scores: list[float], share: float, depth: int) -> float:
    return scores[0] + share * sum(scores[1:depth])


def fuse(
    rankings: Sequence[Sequence[Key]], weights: Sequence[float], k: int = 60
) -> dict[Key, float]:
    """Weighted reciprocal-rank fusion: each ranking gives an item `weight / (k + rank)`; rank
    fusion needs no common scale across scorers as unlike as chunk BM25 and commit subjects."""
    fused: dict[Key, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


def ranked(scores: Mapping[str, float], limit: int | None = None) -> list[str]:
    """The keys of `scores`, best first (ties by name, so results are stable)."""
    order = sorted(scores, key=lambda key: (-scores[key], key))
    return order if limit is None else order[:limit]


# --- budget ------------------------------------------------------------------------------------


def tokens_of(text: str) -> int:
    """The rough token count a model sees for `text` (characters / 4)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def within_budget(hits: Sequence[Hit], max_tokens: int) -> list[Hit]:
    """The best chunks that fit `max_tokens`, in rank order: a chunk overlapping one already
    taken from its file is skipped; one that does not fit is skipped for a smaller one; only the
    first is cut (to its first lines that fit), so a prompt never comes back empty."""
    taken: list[Hit] = []
    left = max_tokens
    for hit in hits:
        if left <= 0:
            break
        if any(_overlaps(hit.chunk, t.chunk) for t in taken):
            continue
        if not taken and tokens_of(hit.chunk.text) > left:
            hit = Hit(_head(hit.chunk, left * CHARS_PER_TOKEN), hit.score)
        cost = tokens_of(hit.chunk.text)
        if cost <= left:
            taken.append(hit)
            left -= cost
    return taken


def _overlaps(a: Chunk, b: Chunk) -> bool:
    return a.path == b.path and a.start <= b.end and b.start <= a.end


def _head(chunk: Chunk, chars: int) -> Chunk:
    """The first whole lines of `chunk` within `chars` characters (or its first characters when
    even the first line is longer)."""
    kept: list[str] = []
    size = 0
    for line in chunk.text.split("\n"):
        if size + len(line) + (1 if kept else 0) > chars:
            break
        size += len(line) + (1 if kept else 0)
        kept.append(line)
    if not kept:
        return replace(chunk, end=chunk.start, text=chunk.text[:chars])
    return replace(chunk, end=chunk.start + len(kept) - 1, text="\n".join(kept))


# --- history -----------------------------------------------------------------------------------


def change_prior(history: Sequence[Sequence[str]], half_life: float = 50.0) -> dict[str, float]:
    """How often each file changed, the newest commits counting most (`history` newest first;
    a commit `half_life` commits back counts half): the files a team keeps touching are the
    likely targets of its next task."""
    prior: dict[str, float] = {}
    for age, paths in enumerate(history):
        weight = 0.5 ** (age / half_life)
        for path in paths:
            prior[path] = prior.get(path, 0.0) + weight
    return prior


def cochanges(history: Sequence[Sequence[str]], max_files: int = 12) -> dict[str, dict[str, float]]:
    """For each file, the files changed in the same commits and how often (commits of more than
    `max_files` files, sweeping renames and reformats, are left out)."""
    pairs: dict[str, dict[str, float]] = {}
    for paths in history:
        unique = sorted(set(paths))
        if len(unique) > max_files:
            continue
        for a in unique:
            row = pairs.setdefault(a, {})
            for b in unique:
                if a != b:
                    row[b] = row.get(b, 0.0) + 1.0
    return pairs


def cochange_scores(
    top: Sequence[str], pairs: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """The files that changed together with the `top` files of a first ranking, each top file's
    vote shared by rank (1/r) and normalised by how often it changed at all."""
    scores: dict[str, float] = {}
    for rank, path in enumerate(top, start=1):
        row = pairs.get(path, {})
        total = sum(row.values()) or 1.0
        for other, count in row.items():
            scores[other] = scores.get(other, 0.0) + count / total / rank
    return scores
