"""The git adapter against real repositories in tmp_path: a bare repository is the remote, an
`upstream` clone of it is where the team commits, and aico keeps its own checkout."""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest

from core.adapters.git import GitError, Proposal, discard, find, propose, push, sync
from core.domain.edits import EditRefused, read_changes
from core.domain.repos import RepoSpec

AUTHOR = ("aico", "aico@example.invalid")
TOKEN = "ghp_S3cretTokenThatMustNeverLeak"
ME = git.Actor("Team Member", "member@example.invalid")


class Upstream:
    """The remote (bare) and a clone of it where the team's commits are made and pushed."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.bare = git.Repo.init(root / "remote.git", bare=True, initial_branch="main")
        self.repo = git.Repo.init(root / "upstream", initial_branch="main")
        self.repo.create_remote("origin", str(root / "remote.git"))
        self.commit(files, "The first commit")

    def commit(self, files: dict[str, str | None], message: str) -> str:
        work = Path(self.repo.working_tree_dir or "")
        for path, text in files.items():
            if text is None:
                self.repo.index.remove([path], working_tree=True)
                continue
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
            self.repo.index.add([path])
        self.repo.index.commit(message, author=ME, committer=ME)
        self.repo.git.push("origin", "main")
        return self.repo.head.commit.hexsha

    def link(self, path: str, target: str, message: str = "A link") -> str:
        """Commit a symbolic link `path` -> `target`."""
        work = Path(self.repo.working_tree_dir or "")
        os.symlink(target, work / path)
        self.repo.git.add(path)
        self.repo.git.commit("-m", message, f"--author={ME.name} <{ME.email}>")
        self.repo.git.push("origin", "main")
        return self.repo.head.commit.hexsha

    @property
    def spec(self) -> RepoSpec:
        return RepoSpec("api", str(self.bare.git_dir))


@pytest.fixture
def upstream(tmp_path) -> Upstream:
    return Upstream(
        tmp_path,
        {
            "app/hello.py": "def hello():\n    return 'Helo'\n",
            "README.md": "# api\n",
            "old.txt": "to be removed\n",
            ".gitignore": "build/\n",
        },
    )


@pytest.fixture
def checkout(tmp_path, upstream) -> Path:
    path = tmp_path / "data" / "repos" / "api"
    sync(upstream.spec, path)
    return path


@pytest.fixture
def worktrees(tmp_path) -> Path:
    return tmp_path / "data" / "repos" / "api.changes"


def head(path: Path) -> str:
    return git.Repo(path).head.commit.hexsha


def branches(path: Path) -> list[str]:
    return [ref.name for ref in git.Repo(path).branches]  # type: ignore[attr-defined]


def change(**extra) -> dict:
    return {
        "summary": "Fix the greeting",
        "edits": [
            {"path": "app/hello.py", "search": "'Helo'", "replace": "'Hello'"},
            {"path": "app/names.py", "replace": "NAMES = ['world']\n"},
        ],
        **extra,
    }


def everything_under(root: Path) -> str:
    """Every file's bytes under `root`, as text (to look for a token anywhere)."""
    return "".join(
        (Path(d) / f).read_bytes().decode("latin-1")
        for d, _, names in os.walk(root)
        for f in names
        if not (Path(d) / f).is_symlink()
    )


# ---- sync ----


def test_a_first_sync_clones_the_remote_branch(tmp_path, upstream):
    checkout = tmp_path / "data" / "repos" / "api"
    synced = sync(upstream.spec, checkout)
    assert synced.previous is None and synced.changed is None
    assert synced.branch == "main"
    assert synced.revision == upstream.repo.head.commit.hexsha
    assert (checkout / "app" / "hello.py").read_text() == "def hello():\n    return 'Helo'\n"


def test_a_fetch_brings_new_commits_and_lists_exactly_the_changed_files(checkout, upstream):
    before = head(checkout)
    upstream.commit({"app/hello.py": "def hello():\n    return 'Hi'\n", "new.md": "n\n"}, "Two")
    upstream.repo.git.mv("README.md", "docs.md")
    upstream.repo.index.commit("Rename", author=ME, committer=ME)
    after = upstream.commit({"old.txt": None}, "Remove")

    synced = sync(upstream.spec, checkout)

    assert (synced.previous, synced.revision) == (before, after)
    assert sorted(synced.changed or []) == [
        "README.md",
        "app/hello.py",
        "docs.md",
        "new.md",
        "old.txt",
    ]
    assert head(checkout) == after
    assert (checkout / "docs.md").exists() and not (checkout / "old.txt").exists()


def test_a_fetch_without_new_commits_changes_nothing(checkout, upstream):
    synced = sync(upstream.spec, checkout)
    assert synced.changed == [] and synced.previous == synced.revision


def test_a_fetch_resets_whatever_was_done_to_the_checkout_by_hand(checkout, upstream):
    (checkout / "README.md").write_text("edited by hand\n")
    (checkout / "stray.txt").write_text("left behind\n")
    sync(upstream.spec, checkout)
    assert (checkout / "README.md").read_text() == "# api\n"
    assert not (checkout / "stray.txt").exists()


def test_a_half_made_clone_is_cleaned_and_cloned_again(tmp_path, upstream):
    checkout = tmp_path / "data" / "repos" / "api"
    git.Repo.init(checkout)  # what a clone killed after `git init` leaves: no commit yet
    (checkout / "partial.pack").write_text("junk")
    staging = checkout.with_name(".api.cloning")
    staging.mkdir()
    (staging / "junk").write_text("junk")

    synced = sync(upstream.spec, checkout)

    assert synced.changed is None and head(checkout) == synced.revision
    assert not (checkout / "partial.pack").exists() and not staging.exists()


def test_a_missing_repository_is_a_clear_git_error(tmp_path):
    spec = RepoSpec("ghost", str(tmp_path / "nowhere.git"))
    with pytest.raises(
        GitError, match=r"could not clone ghost \(.*nowhere\.git\): .*does not exist"
    ):
        sync(spec, tmp_path / "data" / "repos" / "ghost")
    assert not (tmp_path / "data" / "repos" / "ghost").exists()


def test_a_token_never_appears_in_the_error_or_on_disk(tmp_path, monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    spec = RepoSpec("private", "https://someone:hunter2@127.0.0.1:9/org/private.git")
    data = tmp_path / "data"
    with pytest.raises(GitError) as failed:
        sync(spec, data / "repos" / "private", token=TOKEN)
    message = str(failed.value)
    assert "could not clone private" in message
    assert TOKEN not in message and "hunter2" not in message
    assert base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() not in message
    assert TOKEN not in everything_under(data) if data.exists() else True


# ---- the token over HTTP, checked by a server that wants it ----


class _Server(ThreadingHTTPServer):
    seen: list[str]


class _AuthHandler(SimpleHTTPRequestHandler):
    """git's dumb HTTP protocol (plain files) behind a Basic authorization check."""

    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

    def do_GET(self) -> None:
        self.server.seen.append(self.headers.get("Authorization", ""))  # type: ignore[attr-defined]
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(upstream, monkeypatch) -> Iterator[tuple[RepoSpec, _Server]]:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    upstream.bare.git.update_server_info()
    root = Path(upstream.bare.git_dir).parent
    server = _Server(("127.0.0.1", 0), partial(_AuthHandler, directory=str(root)))
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield RepoSpec("private", f"http://127.0.0.1:{server.server_port}/remote.git"), server
    server.shutdown()
    server.server_close()


def test_a_token_reaches_the_server_as_a_header_and_is_stored_nowhere(
    tmp_path, served, upstream, caplog
):
    caplog.set_level(logging.DEBUG)  # GitPython logs every command it runs at DEBUG
    spec, server = served
    checkout = tmp_path / "data" / "repos" / "private"
    synced = sync(spec, checkout, token=TOKEN)
    upstream.commit({"README.md": "# api, again\n"}, "Two")
    upstream.bare.git.update_server_info()
    again = sync(spec, checkout, token=TOKEN)

    assert synced.revision != again.revision and again.changed == ["README.md"]
    assert server.seen and all(seen == _AuthHandler.expected for seen in server.seen)
    config = (checkout / ".git" / "config").read_text()
    assert TOKEN not in config and "extraHeader" not in config
    assert TOKEN not in everything_under(checkout / ".git")
    assert "'fetch'" in caplog.text, "GitPython's command log was captured"
    assert TOKEN not in caplog.text and "extraHeader" not in caplog.text


def test_a_wrong_token_fails_without_showing_it(tmp_path, served):
    spec, _ = served
    with pytest.raises(GitError) as failed:
        sync(spec, tmp_path / "data" / "repos" / "private", token="wrong-" + TOKEN)
    assert TOKEN not in str(failed.value)
    assert "could not clone private" in str(failed.value)


# ---- proposals ----


def test_a_proposal_is_a_commit_with_exactly_the_change_on_its_own_branch(checkout, worktrees):
    main_before = head(checkout)
    proposal = propose(
        checkout, worktrees, "t1", read_changes(change()), "Task t1 by <@U1>:\n# keep me", AUTHOR
    )

    assert proposal.branch == "aico/t1" and proposal.base == main_before
    assert [(f.path, f.added, f.removed, f.status) for f in proposal.files] == [
        ("app/hello.py", 1, 1, "modified"),
        ("app/names.py", 1, 0, "added"),
    ]
    assert "-    return 'Helo'\n+    return 'Hello'" in proposal.diff
    assert proposal.stat() == "2 files changed, +2 -1"
    commit = git.Repo(checkout).commit(proposal.commit)
    assert commit.parents[0].hexsha == main_before
    assert (commit.author.name, commit.author.email) == AUTHOR
    assert commit.message == "Fix the greeting\n\nTask t1 by <@U1>:\n# keep me\n\nAico-Task: t1\n"
    assert (worktrees / "t1" / "app" / "hello.py").read_text().endswith("'Hello'\n")
    # the default branch and the checkout are untouched
    assert head(checkout) == main_before and git.Repo(checkout).active_branch.name == "main"
    assert (checkout / "app" / "hello.py").read_text().endswith("'Helo'\n")
    assert not (checkout / "app" / "names.py").exists()


def test_a_proposal_can_delete_a_file(checkout, worktrees):
    changes = read_changes({"summary": "Drop old.txt", "edits": [], "delete": ["old.txt"]})
    proposal = propose(checkout, worktrees, "t2", changes, "", AUTHOR)
    assert [(f.path, f.status) for f in proposal.files] == [("old.txt", "deleted")]


def test_proposing_twice_makes_one_commit(checkout, worktrees):
    first = propose(checkout, worktrees, "t1", read_changes(change()), "", AUTHOR)
    second = propose(checkout, worktrees, "t1", read_changes(change()), "", AUTHOR)
    assert second == first
    assert git.Repo(checkout).git.rev_list("--count", f"{first.base}..aico/t1") == "1"


def test_find_gives_the_proposal_of_a_task_or_none(checkout, worktrees):
    assert find(checkout, "t1") is None
    made = propose(checkout, worktrees, "t1", read_changes(change()), "", AUTHOR)
    assert find(checkout, "t1") == made


def test_a_dirty_worktree_left_by_a_crash_is_cleaned_by_the_next_proposal(checkout, worktrees):
    repo = git.Repo(checkout)
    repo.git.worktree("add", "-b", "aico/t3", str(worktrees / "t3"), "HEAD")
    (worktrees / "t3" / "app" / "hello.py").write_text("half applied\n")
    (worktrees / "t3" / "junk.py").write_text("junk\n")

    proposal = propose(checkout, worktrees, "t3", read_changes(change()), "", AUTHOR)

    assert [f.path for f in proposal.files] == ["app/hello.py", "app/names.py"]
    assert not (worktrees / "t3" / "junk.py").exists()
    assert "half applied" not in proposal.diff


def test_a_leftover_directory_where_the_worktree_goes_is_cleaned(checkout, worktrees):
    (worktrees / "t3" / "app").mkdir(parents=True)
    (worktrees / "t3" / "app" / "hello.py").write_text("half written\n")
    proposal = propose(checkout, worktrees, "t3", read_changes(change()), "", AUTHOR)
    assert (worktrees / "t3" / "app" / "hello.py").read_text().endswith("'Hello'\n")
    assert len(proposal.files) == 2


def test_a_path_that_looks_like_pathspec_magic_is_just_a_file_name(checkout, worktrees):
    edits = [{"path": ":(glob)*.md", "replace": "odd but legal\n"}]
    proposal = propose(
        checkout, worktrees, "t13", read_changes({"summary": "x", "edits": edits}), "", AUTHOR
    )
    assert [(f.path, f.status) for f in proposal.files] == [(":(glob)*.md", "added")]


def test_a_failure_before_the_commit_leaves_no_worktree_and_no_branch(checkout, worktrees):
    # a host-configured filter that fails when git stages a file (as a broken git-lfs would)
    repo = git.Repo(checkout)
    with repo.config_writer() as config:
        config.set_value('filter "boom"', "smudge", "cat")
        config.set_value('filter "boom"', "clean", "false")
        config.set_value('filter "boom"', "required", "true")
    (checkout / ".git" / "info").mkdir(exist_ok=True)
    (checkout / ".git" / "info" / "attributes").write_text("*.py filter=boom\n")

    with pytest.raises(GitError, match="could not stage the change"):
        propose(checkout, worktrees, "t4", read_changes(change()), "", AUTHOR)

    assert not (worktrees / "t4").exists()
    assert "aico/t4" not in branches(checkout)
    assert repo.git.worktree("list", "--porcelain").count("worktree ") == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"path": "docs/notes.md", "replace": "escaped\n"},
        {"path": "docs/new/deeper.md", "replace": "escaped\n"},
        {"path": "outside.txt", "replace": "overwritten\n"},
        {"path": "outside.txt", "search": "secret", "replace": "leaked"},
    ],
)
def test_a_symlink_that_leads_outside_is_refused_and_nothing_is_written(
    tmp_path, checkout, worktrees, upstream, edit
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file.txt").write_text("secret\n")
    upstream.link("docs", str(outside))
    upstream.link("outside.txt", str(outside / "file.txt"))
    sync(upstream.spec, checkout)
    main_before = head(checkout)

    changes = read_changes({"summary": "Escape", "edits": [edit]})
    with pytest.raises(EditRefused, match="leads outside the repository"):
        propose(checkout, worktrees, "t5", changes, "", AUTHOR)

    assert sorted(p.name for p in outside.iterdir()) == ["file.txt"]
    assert (outside / "file.txt").read_text() == "secret\n"
    assert not (worktrees / "t5").exists() and "aico/t5" not in branches(checkout)
    assert head(checkout) == main_before and not git.Repo(checkout).is_dirty()


def test_a_symlink_into_git_is_refused(checkout, worktrees, upstream):
    upstream.link("meta", ".git")
    sync(upstream.spec, checkout)
    for path in ("meta/config", "meta/hooks/pre-commit"):
        changes = read_changes({"summary": "Hook", "edits": [{"path": path, "replace": "x\n"}]})
        with pytest.raises(EditRefused, match=r"leads into \.git|outside the repository"):
            propose(checkout, worktrees, "t6", changes, "", AUTHOR)
    assert not (worktrees / "t6").exists()
    assert not (checkout / ".git" / "hooks" / "pre-commit").exists()


def test_a_symlink_to_the_checkouts_git_directory_is_refused(checkout, worktrees, upstream):
    upstream.link("meta", str(checkout / ".git"))
    sync(upstream.spec, checkout)
    config_before = (checkout / ".git" / "config").read_text()
    changes = read_changes({"summary": "x", "edits": [{"path": "meta/config", "replace": "x"}]})
    with pytest.raises(EditRefused, match="outside the repository"):
        propose(checkout, worktrees, "t7", changes, "", AUTHOR)
    assert (checkout / ".git" / "config").read_text() == config_before


def test_a_symlink_inside_the_repository_is_named_not_written_through(
    checkout, worktrees, upstream
):
    upstream.link("src", "app")
    sync(upstream.spec, checkout)
    edit = {"path": "src/hello.py", "search": "'Helo'", "replace": "'Hello'"}
    with pytest.raises(EditRefused, match=r"edit app/hello\.py instead"):
        propose(
            checkout, worktrees, "t8", read_changes({"summary": "x", "edits": [edit]}), "", AUTHOR
        )


def test_an_edit_refused_in_the_worktree_writes_nothing(checkout, worktrees):
    edits = [
        {"path": "app/new.py", "replace": "fine\n"},
        {"path": "app/hello.py", "search": "not there", "replace": "x"},
    ]
    with pytest.raises(EditRefused, match="0 matches"):
        propose(
            checkout, worktrees, "t9", read_changes({"summary": "x", "edits": edits}), "", AUTHOR
        )
    assert not (worktrees / "t9").exists() and "aico/t9" not in branches(checkout)


def test_an_ignored_path_is_refused(checkout, worktrees):
    changes = read_changes({"summary": "x", "edits": [{"path": "build/out.py", "replace": "x"}]})
    with pytest.raises(EditRefused, match="ignored"):
        propose(checkout, worktrees, "t10", changes, "", AUTHOR)


def test_hooks_of_the_checkout_never_run(checkout, worktrees, tmp_path):
    marker = tmp_path / "hook-ran"
    for name in ("pre-commit", "commit-msg", "post-commit", "post-checkout", "pre-push"):
        hook = checkout / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        hook.chmod(0o755)
    proposal = propose(checkout, worktrees, "t11", read_changes(change()), "", AUTHOR)
    assert proposal.commit and not marker.exists()


def test_a_change_never_goes_to_the_checkouts_own_branch(tmp_path, upstream):
    upstream.repo.git.push("origin", "main:aico/t12")
    spec = RepoSpec("api", str(upstream.bare.git_dir), branch="aico/t12")
    checkout = tmp_path / "data" / "repos" / "api"
    sync(spec, checkout)
    with pytest.raises(GitError, match="checkout's own branch"):
        propose(checkout, tmp_path / "changes", "t12", read_changes(change()), "", AUTHOR)


# ---- push and discard ----


def test_push_creates_the_branch_on_the_remote(checkout, worktrees, upstream):
    proposal: Proposal = propose(checkout, worktrees, "t1", read_changes(change()), "", AUTHOR)
    push(checkout, proposal.branch, upstream.spec, "")
    push(checkout, proposal.branch, upstream.spec, "")  # a retried push is fine
    assert upstream.bare.commit("aico/t1").hexsha == proposal.commit
    assert upstream.bare.commit("main").hexsha == proposal.base


def test_push_refuses_anything_but_an_aico_branch(checkout, upstream):
    for branch in ("main", "aico/", "aico/../main", "feature/x"):
        with pytest.raises(GitError, match=r"not a branch of aico's changes|cannot name"):
            push(checkout, branch, upstream.spec, "")


def test_push_never_forces_over_another_commit(checkout, worktrees, upstream):
    proposal = propose(checkout, worktrees, "t1", read_changes(change()), "", AUTHOR)
    other = upstream.commit({"README.md": "# other\n"}, "Someone else's aico/t1")
    upstream.repo.git.push("origin", "main:aico/t1")
    with pytest.raises(GitError, match=r"could not push aico/t1 to api \(.*\): .*rejected"):
        push(checkout, proposal.branch, upstream.spec, "")
    assert upstream.bare.commit("aico/t1").hexsha == other


def test_discard_removes_the_worktree_and_the_branch_and_can_be_repeated(checkout, worktrees):
    proposal = propose(checkout, worktrees, "t1", read_changes(change()), "", AUTHOR)
    discard(checkout, worktrees, proposal.branch)
    discard(checkout, worktrees, proposal.branch)
    assert not (worktrees / "t1").exists()
    assert branches(checkout) == ["main"]
    assert find(checkout, "t1") is None
