"""The code index on a real git repository made in tmp_path: the right file for known queries,
refresh after a commit, save and load, a corrupt or older index refused; with and without the
optional embedding model (wordllama)."""

from __future__ import annotations

import gzip
import json
import socket
import sys
from pathlib import Path

import git
import pytest

from core.adapters.index import CodeIndex, Tuning, _embedder, embeddings_available

FILES = {
    "core/heartbeat.py": '''"""Worker heartbeats."""


def read_heartbeats(store):
    """The last beat of every worker."""
    return store.rows("beats")


class HeartbeatWriter:
    def beat(self, worker_id):
        self.store.write("beats", worker_id)
''',
    "core/breaker.py": '''"""The circuit breaker around Claude calls."""


class CircuitBreaker:
    def trip(self):
        self.state = "open"

    def reset_after_cooldown(self):
        self.state = "half-open"
''',
    "web/parseResponse.js": "function parseHTTPResponse(body) {\n  return JSON.parse(body);\n}\n",
    "README.md": "# demo\n\nA demo repository for the index.\n",
    "node_modules/dep/index.js": "function heartbeat() {}\n",
    "poetry.lock": "heartbeat = 1\n",
    "PKG-INFO": "Metadata-Version: 2.1\nName: demo\n\nWorkers write a heartbeat.\n",
    "demo.egg-info/SOURCES.txt": "core/heartbeat.py\n",
    "logo.png": "\x89PNG\x00\x00heartbeat",
}


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    root = tmp_path / "repo"
    for path, text in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    repository = git.Repo.init(root)
    _commit(repository, ["core/heartbeat.py"], "Workers write a heartbeat every second")
    _commit(repository, list(FILES), "The breaker opens after five failures")
    return repository


def _commit(repository: git.Repo, paths: list[str], message: str) -> None:
    repository.index.add(paths)
    actor = git.Actor("Test", "test@example.invalid")
    repository.index.commit(message, author=actor, committer=actor)


def _root(repository: git.Repo) -> Path:
    return Path(repository.working_tree_dir or "")


def test_known_queries_find_their_file(repo):
    index = CodeIndex.build(_root(repo))

    assert index.search("read the heartbeats of the workers").files[0].path == "core/heartbeat.py"
    assert index.search("circuit breaker reset cooldown").files[0].path == "core/breaker.py"
    assert index.search("parse HTTP response").files[0].path == "web/parseResponse.js"
    best = index.search("breaker reset after cooldown").chunks[0].chunk
    assert (best.path, best.kind, best.name) == (
        "core/breaker.py",
        "method",
        "CircuitBreaker.reset_after_cooldown",
    )
    assert (best.start, best.end) == (8, 9)


def test_vendored_lock_generated_and_binary_files_are_not_indexed(repo):
    index = CodeIndex.build(_root(repo))

    assert index.files == 4
    found = {f.path for f in index.search("heartbeat", k=20).files}
    assert found == {"core/heartbeat.py"}


def test_refresh_after_a_commit_reads_only_the_changed_files(repo):
    root = _root(repo)
    index = CodeIndex.build(root)
    assert index.reads == 4

    (root / "core/breaker.py").unlink()
    (root / "core/scaler.py").write_text("def autoscale_workers(queue_depth):\n    return 2\n")
    (root / "README.md").write_text("# demo\n\nNow with an autoscaler.\n")
    repo.index.remove(["core/breaker.py"])
    _commit(repo, ["core/scaler.py", "README.md"], "An autoscaler")
    changed = repo.git.diff("--name-only", "HEAD~1", "HEAD").split()

    assert index.refresh(root, changed) == 2  # the new and the changed file; the deleted one goes
    assert index.reads == 6
    assert index.search("autoscale workers").files[0].path == "core/scaler.py"
    assert "core/breaker.py" not in {f.path for f in index.search("circuit breaker").files}
    assert index.files == 4


def test_without_history_a_plain_directory_is_indexed(tmp_path):
    (tmp_path / "tool.py").write_text("def compress_archive(path):\n    pass\n")
    index = CodeIndex.build(tmp_path, history=False)

    assert index.search("compress the archive").files[0].path == "tool.py"
    assert CodeIndex.build(tmp_path).files == 1  # history asked for, no repository: none


def test_history_votes_for_the_files_earlier_similar_commits_touched(repo):
    index = CodeIndex.build(_root(repo), tuning=Tuning(history_weight=1.0, file_weight=0.0))
    index.tuning = Tuning(chunk_weight=0.0, file_weight=0.0, history_weight=1.0)

    assert index.search("heartbeat every second").files[0].path == "core/heartbeat.py"


def test_a_saved_index_loads_with_the_same_answers(repo, tmp_path):
    index = CodeIndex.build(_root(repo))
    index.revision = "abc123"
    index.save(tmp_path / "saved")

    loaded = CodeIndex.load(tmp_path / "saved")

    assert (loaded.revision, loaded.files, loaded.chunks) == ("abc123", index.files, index.chunks)
    query = "circuit breaker trip"
    assert loaded.search(query) == index.search(query)
    assert list((tmp_path / "saved").iterdir()) == [tmp_path / "saved" / "index.json.gz"]


def test_saving_again_replaces_the_index_whole(repo, tmp_path):
    index = CodeIndex.build(_root(repo))
    index.save(tmp_path / "saved")
    index.revision = "second"
    index.save(tmp_path / "saved")

    assert CodeIndex.load(tmp_path / "saved").revision == "second"


def test_an_absent_index_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        CodeIndex.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    "content",
    [
        b"not gzip at all",
        gzip.compress(b"{not json", mtime=0),
        gzip.compress(b'{"format": 99}', mtime=0),
    ],
    ids=["not gzip", "not JSON", "an unknown format"],  # stable ids: xdist's workers must agree
)
def test_a_corrupt_index_is_refused(repo, tmp_path, content):
    CodeIndex.build(_root(repo)).save(tmp_path / "saved")
    (tmp_path / "saved" / "index.json.gz").write_bytes(content)

    with pytest.raises(ValueError, match="corrupt"):
        CodeIndex.load(tmp_path / "saved")


def test_a_truncated_index_is_refused(repo, tmp_path):
    CodeIndex.build(_root(repo)).save(tmp_path / "saved")
    target = tmp_path / "saved" / "index.json.gz"
    target.write_bytes(target.read_bytes()[:-20])

    with pytest.raises(ValueError, match="corrupt"):
        CodeIndex.load(tmp_path / "saved")


def test_a_subject_that_names_a_file_finds_it_before_files_that_only_mention_the_word(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/stack.py").write_text(
        '"""The processes of a test run."""\n\n\ndef start_all(processes):\n'
        '    """Start each process; when one fails, stop those already started."""\n'
        "    return [p.start() for p in processes]\n"
    )
    (tmp_path / "tests/drills.py").write_text(
        '"""Fault drills against the stack."""\n\n\ndef kill_broker(stack):\n'
        "    stack.broker.kill()  # the stack goes on\n\n\ndef slack_down(stack):\n"
        "    stack.slack.stop()  # the stack fails to reach Slack\n"
    )
    index = CodeIndex.build(tmp_path, history=False)

    found = index.search("Test stack: a stack that fails to start stops what it started")

    assert [f.path for f in found.files] == ["tests/stack.py", "tests/drills.py"]


def test_an_index_saved_in_the_previous_format_is_refused_so_that_it_is_rebuilt(repo, tmp_path):
    CodeIndex.build(_root(repo)).save(tmp_path / "saved")
    old = {"format": 1, "revision": "abc", "history": True, "stem": True, "files": []}
    (tmp_path / "saved" / "index.json.gz").write_bytes(gzip.compress(json.dumps(old).encode()))

    with pytest.raises(ValueError, match="rebuild"):
        CodeIndex.load(tmp_path / "saved")


@pytest.fixture
def without_wordllama(monkeypatch):
    """An environment where `import wordllama` fails, as on an install without the package."""
    monkeypatch.setitem(sys.modules, "wordllama", None)
    _embedder.cache_clear()
    yield
    _embedder.cache_clear()


def test_without_wordllama_the_index_is_bm25_alone_and_still_finds_files(
    repo, tmp_path, without_wordllama
):
    index = CodeIndex.build(_root(repo))

    assert not embeddings_available() and not index.embedded
    assert index.search("circuit breaker reset cooldown").files[0].path == "core/breaker.py"
    index.save(tmp_path / "saved")
    assert CodeIndex.load(tmp_path / "saved").search("trip") == index.search("trip")


def test_with_wordllama_a_query_in_other_words_finds_the_file_bm25_cannot(repo):
    pytest.importorskip("wordllama")
    index = CodeIndex.build(_root(repo))
    query = "a fuse that blows after repeated faults"

    assert index.embedded
    found = index.search(query)
    assert found.files[0].path == "core/breaker.py"
    assert found.chunks[0].chunk.path == "core/breaker.py"  # the prompt quotes the breaker
    index.tuning = Tuning(embedding_weight=0.0)
    assert "core/breaker.py" not in [f.path for f in index.search(query).files]


def test_the_embedding_model_loads_from_its_package_without_the_network(monkeypatch):
    pytest.importorskip("wordllama")

    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _embedder.cache_clear()
    try:
        embed = _embedder()
        assert embed is not None
        vectors = embed(["read the heartbeats", "the heartbeat reader"])
        assert vectors.shape == (2, 256)
        assert float(vectors[0] @ vectors[1]) > 0.5
    finally:
        _embedder.cache_clear()


def test_an_index_saved_without_embeddings_gains_them_when_loaded_with_wordllama(repo, tmp_path):
    pytest.importorskip("wordllama")
    CodeIndex.build(_root(repo), tuning=Tuning(embeddings=False)).save(tmp_path / "saved")

    loaded = CodeIndex.load(tmp_path / "saved")

    assert loaded.embedded
    assert loaded.search("a fuse that blows after repeated faults").files[0].path == (
        "core/breaker.py"
    )


def test_a_file_the_query_names_comes_first(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "breaker.py").write_text(
        "def trip_breaker(breaker):\n    '''Open the circuit breaker.'''\n    breaker.open()\n"
    )
    (tmp_path / "README.md").write_text("# demo\n\nHow to run it.\n")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["pika"]\n')
    named = CodeIndex.build(tmp_path, history=False)
    unnamed = CodeIndex.build(tmp_path, history=False, tuning=Tuning(named_weight=0.0))
    query = "README: what opens the circuit breaker"

    assert named.search(query).files[0].path == "README.md"
    assert unnamed.search(query).files[0].path == "core/breaker.py"
    assert named.search("orjson in the dependencies").files[0].path == "pyproject.toml"


def test_a_command_that_runs_a_target_finds_the_file_that_defines_it(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_pool.py").write_text(
        "def test_the_pool_distributes_the_tests(pool):\n"
        "    '''The tests distributed over the workers of the pool.'''\n"
        "    assert pool.workers\n"
    )
    (tmp_path / "Makefile").write_text(
        ".PHONY: test lint\n\ntest: .venv/bin/.installed\n\t.venv/bin/pytest -n 4\n\n"
        "lint:\n\t.venv/bin/ruff check .\n"
    )
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "package.json").write_text('{"scripts": {"build": "vite build"}}\n')
    index = CodeIndex.build(tmp_path, history=False)
    without = CodeIndex.build(tmp_path, history=False, tuning=Tuning(run_weight=0.0))
    query = "make test distributes the tests over the workers of the pool"

    assert index.search(query).files[0].path == "Makefile"
    assert without.search(query).files[0].path == "tests/test_pool.py"
    assert index.search("npm run build fails on a fresh clone").files[0].path == "web/package.json"
    # the verb alone names nothing
    assert index.search("make the tests of the pool faster").files[0].path == "tests/test_pool.py"


def test_a_change_to_a_dependency_finds_the_manifest_that_declares_it(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "asn1.rs").write_text(
        "// Reads ASN.1 values with the asn1 crate: its version decides the parser.\n"
        "pub fn parse_asn1(data: &[u8]) -> asn1::ParseResult<Value> {\n"
        "    asn1::parse_single(data) // version 0.12 of the asn1 parser\n}\n"
    )
    (tmp_path / "Cargo.toml").write_text(
        '[package]\nname = "demo"\nversion = "0.1.0"\n\n[dependencies]\n'
        'asn1 = { version = "0.12.1", default-features = false }\npem = "1.0"\n'
    )
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndependencies = ["cffi>=1.12"]\n'
    )
    index = CodeIndex.build(tmp_path, history=False)
    without = CodeIndex.build(tmp_path, history=False, tuning=Tuning(dependency_weight=0.0))
    query = "ease asn1 version from 0.12.1 to 0.12"

    assert index.search(query).files[0].path == "Cargo.toml"
    assert without.search(query).files[0].path == "src/asn1.rs"
    assert index.search("Remove the run-time dependency on cffi").files[0].path == (
        "pyproject.toml"
    )
    # naming the dependency is not enough: the query must be about changing it
    assert index.search("parse asn1 values").files[0].path == "src/asn1.rs"


def test_a_revert_finds_the_files_of_the_commit_it_reverts(tmp_path):
    root = tmp_path / "repo"
    (root / "core").mkdir(parents=True)
    files = {
        "core/pacing.py": "def pace(channel):\n    '''Posts to a channel, one a second.'''\n",
        "core/budget.py": "def spend(user, cost):\n    '''A user's spend today, in dollars.'''\n",
        "README.md": "# demo\n\nPosts answers in a channel; a budget a user.\n",
    }
    for path, text in files.items():
        (root / path).write_text(text)
    repository = git.Repo.init(root)
    _commit(repository, list(files), "First version")
    (root / "core/pacing.py").write_text(files["core/pacing.py"] + "LIMIT = 2\n")
    _commit(repository, ["core/pacing.py"], "Two posts a second in each channel")
    index = CodeIndex.build(root)

    prose = "Revert the two posts a second: Slack answered 429 to a user's budget"
    without = CodeIndex.build(root, tuning=Tuning(revert_weight=0.0))

    assert index.search('Revert "Two posts a second in each channel"').files[0].path == (
        "core/pacing.py"
    )
    assert index.search(prose).files[0].path == "core/pacing.py"
    assert without.search(prose).files[0].path != "core/pacing.py"
