"""`aico repos search`: text and JSON, a directory indexed on the fly, saved indexes of the
configured repositories, and one clear line for what cannot be searched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aico.repos import search_main
from core.adapters.index import CodeIndex
from core.domain.repos import RepoSpec, index_dir


@dataclass
class Settings:
    data_dir: Path
    repos: list[RepoSpec] = field(default_factory=list)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "api"
    (root / "billing").mkdir(parents=True)
    (root / "billing" / "invoice.py").write_text(
        "def render_invoice(order):\n    return f'invoice {order.total}'\n"
    )
    (root / "auth.py").write_text("def check_password(user, secret):\n    return user.ok(secret)\n")
    return root


@pytest.fixture
def settings(tmp_path: Path, tree: Path) -> Settings:
    data = tmp_path / "data"
    CodeIndex.build(tree).save(index_dir(data, "api"))
    return Settings(data, [RepoSpec("api", str(tree)), RepoSpec("web", "/nowhere")])


def test_text_lists_ranked_chunks_and_files(capsys, tmp_path, tree):
    code = search_main(["render the invoice", "--path", str(tree)], Settings(tmp_path))

    out = capsys.readouterr().out
    assert code == 0
    first_chunk = out.splitlines()[1].split()
    assert first_chunk[:5] == ["1", "api", "billing/invoice.py:1-2", "function", "render_invoice"]
    files = out.split("files:\n")[1].splitlines()
    assert files[0].split()[:3] == ["1", "api", "billing/invoice.py"]


def test_json_is_one_object_with_chunks_files_and_time(capsys, settings):
    code = search_main(["check password", "--repo", "api", "--json", "--k", "1"], settings)

    found = json.loads(capsys.readouterr().out)
    assert code == 0
    assert found["query"] == "check password"
    assert found["chunks"] == [
        {
            "repo": "api",
            "path": "auth.py",
            "start": 1,
            "end": 2,
            "kind": "function",
            "name": "check_password",
            "score": found["chunks"][0]["score"],
        }
    ]
    assert [(f["repo"], f["path"]) for f in found["files"]] == [("api", "auth.py")]
    assert found["took_ms"] >= 0


def test_an_unknown_repository_is_one_line_and_exit_2(capsys, settings):
    assert search_main(["anything", "--repo", "billing"], settings) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no repository named billing" in err and "api, web" in err


def test_a_repository_not_indexed_yet_is_one_line_and_exit_2(capsys, settings):
    assert search_main(["anything", "--repo", "web"], settings) == 2

    err = capsys.readouterr().err
    assert err == "error: repository web is not indexed yet: aico pm indexes it after cloning\n"


def test_without_repo_or_path_every_configured_index_is_searched(capsys, settings):
    settings.repos = settings.repos[:1]
    assert search_main(["invoice", "--json"], settings) == 0

    assert json.loads(capsys.readouterr().out)["files"][0]["path"] == "billing/invoice.py"


def test_a_corrupt_saved_index_is_one_line_and_exit_2(capsys, settings):
    (index_dir(settings.data_dir, "api") / "index.json.gz").write_bytes(b"garbage")

    assert search_main(["invoice", "--repo", "api"], settings) == 2
    assert "corrupt" in capsys.readouterr().err


def test_no_repositories_and_no_path_is_one_line_and_exit_2(capsys, tmp_path):
    assert search_main(["invoice"], Settings(tmp_path)) == 2
    assert "AICO_REPOS" in capsys.readouterr().err


def test_nothing_matching_says_so(capsys, tmp_path, tree):
    assert search_main(["zzzz qqqq", "--path", str(tree)], Settings(tmp_path)) == 0
    assert capsys.readouterr().out.startswith("nothing matches")
