"""The pure part of code retrieval: words, chunks, file ranks and the prompt's budget."""

from __future__ import annotations

from core.domain.retrieval import (
    Chunk,
    FileNames,
    Hit,
    change_prior,
    chunk_file,
    cochange_scores,
    cochanges,
    command_targets,
    declared_dependencies,
    file_scores,
    fuse,
    name_words,
    ranked,
    split_identifier,
    symbol_names,
    text_of,
    tokenize,
    windows,
    within_budget,
)

MODULE = '''"""Heartbeats of the workers."""

import time

LIMIT = 30


@cache
@other(1)
def read_heartbeats(store):
    """Every worker's last beat."""

    def newest(rows):
        return max(rows)

    return newest(store.rows())


class Beat:
    """One beat."""

    size = 3

    def age(self, now):
        return now - self.at

    @property
    def late(self):
        return self.age(time.time()) > LIMIT


TAIL = "end"
'''


def test_an_identifier_is_kept_whole_and_split_on_case_and_underscores():
    expected = ["parsehttpresponse", "parse", "http", "response"]
    assert split_identifier("parseHTTPResponse") == expected
    assert split_identifier("read_heartbeats") == ["read_heartbeats", "read", "heartbeats"]
    assert split_identifier("HTTPServer2") == ["httpserver2", "http", "server", "2"]
    assert split_identifier("plain") == ["plain"]
    assert split_identifier("__init__") == ["init"]


def test_tokenize_drops_english_and_keyword_stopwords_and_long_numbers():
    words = tokenize("def get_the_value(self): return the 429 of 1700000000 in x")
    assert words == ["get_the_value", "get", "value", "429"]


def test_python_is_chunked_along_its_definitions_with_decorators_and_docstrings():
    chunks = {c.name: c for c in chunk_file("core/beats.py", MODULE)}

    function = chunks["read_heartbeats"]
    assert function.kind == "function"
    assert function.text.splitlines()[0] == "@cache"
    assert '"""Every worker\'s last beat."""' in function.text
    assert "def newest" in function.text and "newest" not in chunks  # nested stays inside
    assert (function.start, function.end) == (8, 16)
    assert MODULE.splitlines()[function.start - 1 : function.end] == function.text.splitlines()


def test_a_class_is_a_chunk_and_so_is_each_of_its_methods():
    chunks = {c.name: c for c in chunk_file("core/beats.py", MODULE)}

    assert chunks["Beat"].kind == "class" and "def late" in chunks["Beat"].text
    assert chunks["Beat.age"].kind == "method"
    assert chunks["Beat.late"].text.startswith("    @property")


def test_the_module_level_lines_are_chunks_of_their_own():
    modules = [c for c in chunk_file("core/beats.py", MODULE) if c.kind == "module"]

    assert modules[0].start == 1 and "import time" in modules[0].text and "LIMIT" in modules[0].text
    assert modules[-1].text == 'TAIL = "end"'
    assert all("def " not in c.text for c in modules)


def test_a_large_class_is_its_header_and_its_methods():
    methods = "".join(f"    def m{i}(self):\n" + "        x = 1\n" * 8 for i in range(12))
    text = 'class Big:\n    """Docs."""\n\n    size = 1\n\n' + methods
    chunks = chunk_file("big.py", text)

    header = next(c for c in chunks if c.kind == "class")
    assert (header.start, header.end) == (1, 4)
    assert sum(c.kind == "method" for c in chunks) == 12


def test_python_that_does_not_parse_and_other_languages_get_overlapping_windows():
    text = "\n".join(f"line {n}" for n in range(1, 101))
    for path, body in (("a.js", text), ("broken.py", "def (:\n" + text)):
        chunks = chunk_file(path, body)
        assert all(c.kind == "window" for c in chunks)
        assert chunks[0].start == 1 and chunks[1].start == 31  # 40 lines, 10 overlapping
        assert chunks[-1].end == len(body.splitlines())


def test_short_and_empty_files():
    assert [(c.start, c.end) for c in windows("a.md", "one\ntwo")] == [(1, 2)]
    assert windows("a.md", "") == []
    assert chunk_file("empty.py", "") == []


def _hit(path: str, start: int, end: int, score: float, size: int = 40) -> Hit:
    return Hit(Chunk(path, start, end, "function", f"f{start}", "x" * size), score)


def test_the_budget_keeps_the_best_chunks_that_fit_and_no_overlaps():
    hits = [
        _hit("a.py", 1, 10, 9.0),  # 10 tokens
        _hit("a.py", 5, 12, 8.0),  # overlaps the first: skipped
        _hit("b.py", 1, 10, 7.0, size=400),  # 100 tokens: does not fit, skipped
        _hit("c.py", 1, 10, 6.0),
    ]
    kept = within_budget(hits, max_tokens=25)
    assert [(h.chunk.path, h.chunk.start) for h in kept] == [("a.py", 1), ("c.py", 1)]


def test_only_the_first_chunk_is_cut_to_fit():
    text = "\n".join(["a" * 39] * 10)  # 10 lines of 40 characters with the newline
    first = Hit(Chunk("a.py", 1, 10, "function", "f", text), 1.0)
    kept = within_budget([first], max_tokens=25)  # 100 characters: two whole lines

    assert len(kept) == 1
    assert kept[0].chunk.text == "\n".join(["a" * 39] * 2)
    assert (kept[0].chunk.start, kept[0].chunk.end) == (1, 2)


def test_a_file_ranks_by_its_best_chunk_plus_a_share_of_the_next():
    hits = [_hit("a.py", 1, 2, 5.0), _hit("b.py", 1, 2, 4.0), _hit("b.py", 3, 4, 4.0)]
    scores = file_scores(hits)

    assert scores["a.py"] == 5.0 and scores["b.py"] == 4.0 + 0.3 * 4.0
    assert ranked(scores) == ["b.py", "a.py"]


def test_rank_fusion_rewards_agreement_and_honours_weights():
    fused = fuse([["a", "b"], ["b", "c"]], [1.0, 1.0], k=1)
    assert ranked(fused) == ["b", "a", "c"]
    assert ranked(fuse([["a", "b"], ["b", "a"]], [1.0, 0.0])) == ["a", "b"]


def test_stemming_meets_plural_words_and_keeps_a_compound_name_exact():
    def stem(word: str) -> str:
        return word.removesuffix("s")

    assert tokenize("heartbeats", stem) == ["heartbeat"]
    assert tokenize("read_heartbeats", stem) == ["read_heartbeats", "read", "heartbeat"]
    assert tokenize("readHeartbeats", stem) == ["readheartbeats", "read", "heartbeat"]


def test_a_file_name_weighs_more_than_its_folders_and_its_names_are_a_field():
    assert tokenize(name_words("tests/integration/stack.py")).count("stack") == 2
    assert tokenize(name_words("tests/integration/stack.py")).count("integration") == 1
    chunks = chunk_file("m.py", MODULE)
    assert symbol_names(chunks).split() == ["read_heartbeats", "Beat", "Beat.age", "Beat.late"]


def test_history_counts_recent_changes_most_and_pairs_files_changed_together():
    history = [["a.py", "test_a.py"], ["b.py"], ["a.py", "test_a.py", "README.md"]]  # newest first

    prior = change_prior(history, half_life=1.0)
    assert prior["a.py"] == 1.0 + 0.25 and prior["b.py"] == 0.5
    pairs = cochanges(history)
    assert pairs["a.py"] == {"test_a.py": 2.0, "README.md": 1.0}
    assert "b.py" not in pairs["a.py"]
    scores = cochange_scores(["a.py"], pairs)
    assert ranked(scores) == ["test_a.py", "README.md"]


def test_a_sweeping_commit_pairs_nothing():
    sweep = [f"f{i}.py" for i in range(30)]
    assert cochanges([sweep]) == {}


PATHS = [
    "README.md",
    "deploy/README.md",
    "core/adapters/index.py",
    "docs/index.py",
    "Makefile",
    "core/adapters/sqlite_store.py",
    "src/UserService.java",
    "src/Settings.java",
    ".gitignore",
    "pyproject.toml",
    "requirements-dev.txt",
]


def test_files_are_named_by_path_name_or_a_name_no_word_could_be():
    names = FileNames(PATHS)

    assert names.named("Fix adapters/index.py and index.py.") == [
        "core/adapters/index.py",
        "docs/index.py",
    ]
    assert names.named("README: the figures") == ["README.md", "deploy/README.md"]
    assert names.named("Makefile: a test target") == ["Makefile"]
    assert names.named("sqlite_store commits in groups") == ["core/adapters/sqlite_store.py"]
    assert names.named("UserService checks roles") == ["src/UserService.java"]
    assert names.named(".gitignore: the bench cache") == [".gitignore"]


def test_ordinary_words_name_no_file():
    names = FileNames(PATHS)

    assert names.named("the index of the repository") == []
    assert names.named("Settings are read once") == []
    assert names.named("readme makefile") == []


def test_a_query_about_dependencies_names_the_manifests():
    names = FileNames(PATHS)

    assert names.named("orjson in the dependencies") == ["pyproject.toml", "requirements-dev.txt"]
    assert names.named("Bump requests from 2.31 to 2.32") == [
        "pyproject.toml",
        "requirements-dev.txt",
    ]
    assert names.named("README: the dependencies")[:1] == ["README.md"]


PYPROJECT = """[build-system]
requires = ["setuptools>=68", "cffi>=1.12; platform_python_implementation != 'PyPy'"]

[project]
name = "demo"
requires-python = ">=3.11"
dependencies = ["slack_bolt>=1.18", "Jinja2[i18n] ~= 3.1"]

[project.optional-dependencies]
docs = ["sphinxcontrib-applehelp", "sphinxcontrib-devhelp"]

[tool.setuptools.packages.find]
include = ["core*"]

[tool.poetry.group.dev.dependencies]
pytest = "^8"
"""
CARGO = """[package]
name = "demo-rust"
version = "0.1.0"

[dependencies]
asn1 = { version = "0.12", default-features = false }
pem = ">= 1.0, < 1.2"

[target.'cfg(unix)'.dependencies]
libc = "0.2"
"""
SETUP_CFG = """[metadata]
name = demo

[options]
python_requires = >=3.8
install_requires =
    cffi >=1.12
    typing_extensions; python_version < "3.8"

[options.extras_require]
test = pytest-cov
"""
SETUP_PY = """setup(
    name="demo",
    packages=["demo"],
    install_requires=["idna>=2.0", 'certifi'],
    extras_require={"socks": ["PySocks>=1.5.6,!=1.5.7"]},
)
"""


def test_the_dependencies_a_manifest_declares_are_read_from_it():
    assert declared_dependencies("pyproject.toml", PYPROJECT) == {
        "setuptools",
        "cffi",
        "slack-bolt",
        "jinja2",
        "sphinxcontrib-applehelp",
        "sphinxcontrib-devhelp",
        "pytest",
    }
    assert declared_dependencies("src/rust/Cargo.toml", CARGO) == {"asn1", "pem", "libc"}
    assert declared_dependencies("setup.cfg", SETUP_CFG) == {
        "cffi",
        "typing-extensions",
        "pytest-cov",
    }
    # an extra's name counts too: "the socks extra" is about setup.py
    assert declared_dependencies("setup.py", SETUP_PY) == {"idna", "certifi", "socks", "pysocks"}
    assert declared_dependencies("requirements-dev.txt", "-e .\nruff==0.6 # lint\n\nmypy\n") == {
        "ruff",
        "mypy",
    }
    assert declared_dependencies("web/package.json", '{"devDependencies": {"@x/vite": "5"}}') == {
        "vite"
    }
    # a manifest that does not parse, or a file that is none, declares nothing
    assert declared_dependencies("pyproject.toml", "[project\ndependencies = [") == frozenset()
    assert declared_dependencies("package.json", "{not json") == frozenset()
    assert declared_dependencies("core/deps.py", "dependencies = ['x']") == frozenset()


def test_a_query_that_changes_a_dependency_names_the_manifests_that_declare_it():
    declared = {
        "pyproject.toml": declared_dependencies("pyproject.toml", PYPROJECT),
        "src/rust/Cargo.toml": declared_dependencies("src/rust/Cargo.toml", CARGO),
        "setup.cfg": declared_dependencies("setup.cfg", SETUP_CFG),
    }
    names = FileNames([*declared, "src/rust/src/asn1.rs", "README.md"], dependencies=declared)

    assert names.depends("ease asn1 version from 0.12.1 to 0.12") == ["src/rust/Cargo.toml"]
    assert names.depends("allow pem 1.1") == ["src/rust/Cargo.toml"]  # a version number says it
    assert names.depends("Remove run-time dependency on cffi") == ["pyproject.toml", "setup.cfg"]
    assert names.depends("Drop dependency on typing_extensions") == ["setup.cfg"]
    # a family of dependencies by their common name, and a word that says it inside a name
    assert names.depends("Move sphinxcontrib modules to extras_require") == ["pyproject.toml"]
    # a dependency named without a word about dependencies, or a change to no declared one
    assert names.depends("parse asn1 lengths over 127 bytes") == []
    assert names.depends("bump the version of the docs") == []


MAKEFILE = """BIN := .venv/bin
export PATH
.PHONY: run test lint bench
all: run

$(BIN)/.installed: pyproject.toml
\ttouch $@

test lint:: $(BIN)/.installed
\t$(BIN)/pytest
%.o: %.c
\tcc -c $<
.DEFAULT_GOAL := run
"""


def test_the_targets_a_command_runs_are_read_from_the_files_that_define_them():
    assert command_targets("Makefile", MAKEFILE) == {"run", "test", "lint", "bench", "all"}
    assert command_targets("docs/rules.mk", "html:\n\tsphinx-build\n") == {"html"}
    assert command_targets("justfile", "lint:\n  ruff check\n@deploy env:\n  ./go\n") == {
        "lint",
        "deploy",
    }
    assert command_targets("package.json", '{"scripts": {"build": "vite", "test:e2e": "x"}}') == {
        "build",
        "test:e2e",
    }
    assert command_targets("package.json", "{not json") == frozenset()
    assert command_targets("core/index.py", "test: 1\n") == frozenset()


def test_a_query_that_runs_a_target_names_the_files_that_define_it():
    targets = {
        "Makefile": command_targets("Makefile", MAKEFILE),
        "docs/Makefile": frozenset({"html"}),
        "web/package.json": frozenset({"build", "test"}),
    }
    names = FileNames([*targets, "README.md"], targets)

    assert names.run("make test, run and bench compile first") == ["Makefile"]
    assert names.run("make -j4 html warns about a link") == ["docs/Makefile"]
    assert names.run("npm run build fails") == ["web/package.json"]
    assert names.run("yarn test is flaky") == ["web/package.json"]
    assert names.run("make the parser faster") == []
    assert names.run("make deploy") == []  # no file defines `deploy`
    assert names.named("make test") == []  # the file names are another ranking


def test_a_file_is_read_again_from_its_overlapping_windows():
    text = "\n".join(f"line {n}" for n in range(1, 101))

    assert text_of(windows("notes.txt", text)) == text
