"""The team's repositories, live: cloned and indexed by the pm, drawn on for a task's context and
cited in its answer, changed on a branch by a code task and reviewed in the thread, and a
repository that cannot be cloned reported while the rest keeps working.

Real processes from the Procfile, a real broker, real git (a bare repository in the test's
directory is the remote), the fakes of Slack and Claude.
"""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from core.adapters.sqlite_store import SqliteEventStore
from core.slack.blocks import APPROVE_ACTION, MAKE_CHANGE_ACTION, REJECT_ACTION
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import CHANNEL, task_id_of, wait_for_answer

pytestmark = pytest.mark.integration

ALERTS = "C0ALERTS1"
OWNER, OTHER, ADMIN = "U0USER1", "U0OTHER", "U0ADMIN"
WEB = "https://example.org/acme/app"
INVOICE = '''"""Invoices."""


def compute_invoice_total(items, tax_rate):
    """Sum the line items of an invoice and add the tax."""
    subtotal = sum(item.price * item.quantity for item in items)
    return round(subtotal * (1 + tax_rate), 2)
'''
TOKENS = '''"""Access tokens."""


def refresh_access_token(session):
    """Trade the session's refresh token for a new access token."""
    return session.post("/oauth/token", {"grant_type": "refresh_token"})
'''


def make_remote(root: Path) -> tuple[git.Repo, Path]:
    """A working repository with two modules, and the bare repository it pushes to."""
    work = git.Repo.init(root / "work", initial_branch="main")
    for path, text in {"billing/invoice.py": INVOICE, "auth/tokens.py": TOKENS}.items():
        (root / "work" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "work" / path).write_text(text)
    work.index.add(["billing/invoice.py", "auth/tokens.py"])
    work.index.commit("Invoices and tokens", author=git.Actor("dev", "dev@example.org"))
    bare = root / "origin.git"
    git.Repo.clone_from(work.working_dir, bare, bare=True)
    work.create_remote("origin", str(bare))
    return work, bare


def store_of(stack: Stack) -> SqliteEventStore:
    return SqliteEventStore(stack.workdir / "data" / "aico.db")


def synced(stack: Stack, name: str = "app", after: str = "") -> dict:
    """The repository's latest `repo_synced` event's data, once it is past revision `after`."""
    store = store_of(stack)
    try:

        def newest():
            records = [r for r in store.tail(f"repo:{name}", 20) if r.type == "repo_synced"]
            last = records[-1].data if records else None
            return last if last and last["revision"] != after else None

        return wait_until(newest, timeout=60)
    finally:
        store.close()


def shown(message: dict) -> str:
    return message.get("text", "") + json.dumps(message.get("blocks"))


def button(message: dict, action_id: str) -> dict | None:
    for block in message.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return element
    return None


@pytest.fixture
def slack():
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def claude():
    with FakeClaude(latency=0.02) as fake:
        yield fake


@pytest.fixture
def remote(tmp_path):
    return make_remote(tmp_path / "remote")


def start(tmp_path: Path, rabbit, slack, claude, repos: str, **settings: str) -> Stack:
    env = {
        "AICO_REPOS": repos,
        "AICO_ADMINS": ADMIN,
        "AICO_CONTEXT_TOKENS": "400",
        **settings,
    }
    return Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **env).start()


def test_a_task_gets_the_right_file_as_context_and_its_answer_links_the_citation(
    rabbit, tmp_path, slack, claude, remote
):
    _, bare = remote
    stack = start(tmp_path, rabbit, slack, claude, f"app={bare} web={WEB}")
    try:
        revision = synced(stack)["revision"]

        # When a user asks about the code
        status, body, elapsed = stack.command(
            "task --repo app How is an invoice's total computed with tax?"
        )
        assert status == 200 and elapsed < 3.0
        task_id = task_id_of(body)
        _, replies = wait_for_answer(slack, task_id)

        # Then Claude got the invoice module as quoted context, before the task itself
        prompt = claude.prompts()[-1]
        assert prompt.index("<repository_context>") < prompt.index("<task>")
        assert 'path="billing/invoice.py"' in prompt
        assert "compute_invoice_total" in prompt
        assert "not instructions" in prompt
        # and the answer's `path:line` citations link to that line at the indexed revision
        answer = shown(replies[-1])
        assert f"{WEB}/blob/{revision}/billing/invoice.py#L" in answer
        # and it offers to make the change
        assert button(replies[-1], MAKE_CHANGE_ACTION) is not None
    finally:
        stack.stop()


def propose(claude: FakeClaude, edits: list[dict], summary: str = "Round totals to cents") -> None:
    claude.tool_answers["propose_changes"] = {"summary": summary, "edits": edits}


ROUNDING = {
    "path": "billing/invoice.py",
    "search": "return round(subtotal * (1 + tax_rate), 2)",
    "replace": "total = subtotal * (1 + tax_rate)\n    return round(total, 2)",
}


def test_a_code_task_proposes_a_branch_that_only_its_requester_or_an_admin_approves(
    rabbit, tmp_path, slack, claude, remote
):
    work, bare = remote
    stack = start(
        tmp_path, rabbit, slack, claude, f"app={bare}", AICO_REPO_TOKEN_APP="ghp-secret-token"
    )
    try:
        synced(stack)
        propose(claude, [ROUNDING])

        # When a user asks for a change
        _, body, _ = stack.command("task --code --repo app Name the total before rounding")
        task_id = task_id_of(body)
        _, replies = wait_for_answer(slack, task_id)
        proposal = replies[-1]

        # Then the thread shows the change with Approve / Reject, and the diff as a file
        assert f"aico/{task_id}" in shown(proposal)
        assert "billing/invoice.py" in shown(proposal)
        assert button(proposal, APPROVE_ACTION) and button(proposal, REJECT_ACTION)
        wait_until(
            lambda: any(m.get("files") for m in slack.replies(CHANNEL, proposal["thread_ts"]))
        )
        # and the branch holds exactly the change, the default branch untouched
        clone = git.Repo(stack.workdir / "data" / "repos" / "app")
        branch = f"aico/{task_id}"
        diff = clone.git.diff("main", branch)
        assert "+    total = subtotal * (1 + tax_rate)" in diff
        assert clone.git.diff("main", branch, "--name-only").split() == ["billing/invoice.py"]
        assert task_id in clone.commit(branch).message
        assert clone.commit("main").hexsha == git.Repo(bare).commit("main").hexsha

        # When someone else presses Approve, they are refused and nothing is pushed
        told = stack.press(CHANNEL, proposal, APPROVE_ACTION, task_id, OTHER)
        assert "Only the person who asked" in json.dumps([p.payload for p in told])
        assert branch not in [h.name for h in git.Repo(bare).heads]

        # When the requester approves, the branch is pushed to the remote, once
        stack.press(CHANNEL, proposal, APPROVE_ACTION, task_id, OWNER)
        wait_until(lambda: branch in [h.name for h in git.Repo(bare).heads], timeout=20)
        thread = slack.wait_for(
            lambda: [
                m for m in slack.replies(CHANNEL, proposal["thread_ts"]) if "Pushed" in shown(m)
            ],
            20,
        )
        assert len(thread) == 1
        assert "ghp-secret-token" not in json.dumps(slack.replies(CHANNEL, proposal["thread_ts"]))
        again = stack.press(CHANNEL, proposal, APPROVE_ACTION, task_id, OWNER)
        assert "already" in json.dumps([p.payload for p in again])
        # and the token reached neither the clone's config nor the event store
        assert (
            "ghp-secret-token"
            not in (stack.workdir / "data" / "repos" / "app" / ".git" / "config").read_text()
        )
        assert b"ghp-secret-token" not in (stack.workdir / "data" / "aico.db").read_bytes()
        del work
    finally:
        stack.stop()


def test_a_rejected_change_loses_its_branch_and_an_admin_may_reject(
    rabbit, tmp_path, slack, claude, remote
):
    _, bare = remote
    stack = start(tmp_path, rabbit, slack, claude, f"app={bare}")
    try:
        synced(stack)
        propose(claude, [ROUNDING])
        _, body, _ = stack.command("task --code --repo app Name the total before rounding")
        task_id = task_id_of(body)
        _, replies = wait_for_answer(slack, task_id)
        clone = git.Repo(stack.workdir / "data" / "repos" / "app")
        assert f"aico/{task_id}" in [h.name for h in clone.heads]

        stack.press(CHANNEL, replies[-1], REJECT_ACTION, task_id, ADMIN)

        wait_until(lambda: f"aico/{task_id}" not in [h.name for h in clone.heads], timeout=20)
        assert f"aico/{task_id}" not in [h.name for h in git.Repo(bare).heads]
    finally:
        stack.stop()


@pytest.mark.parametrize(
    "edit",
    [
        {"path": "../escaped.py", "replace": "print('out')\n"},
        {"path": "ABSOLUTE", "replace": "print('out')\n"},
        {"path": ".git/hooks/pre-commit", "replace": "#!/bin/sh\necho pwned\n"},
        {"path": ".github/workflows/ci.yml", "replace": "on: push\n"},
        {"path": "linked/escaped.py", "replace": "print('out')\n"},
    ],
    ids=["dotdot", "absolute", "dot-git", "workflow", "symlink"],
)
def test_each_escape_attempt_is_refused_with_nothing_written(
    rabbit, tmp_path, slack, claude, remote, edit
):
    work, bare = remote
    outside = tmp_path / "outside"
    outside.mkdir()
    (Path(work.working_dir) / "linked").symlink_to(outside, target_is_directory=True)
    work.index.add(["linked"])
    work.index.commit("A link out", author=git.Actor("dev", "dev@example.org"))
    work.remote("origin").push("main")
    if edit["path"] == "ABSOLUTE":
        edit = {**edit, "path": str(outside / "escaped.py")}
    stack = start(tmp_path, rabbit, slack, claude, f"app={bare}")
    try:
        synced(stack)
        propose(claude, [ROUNDING, edit])

        _, body, _ = stack.command("task --code --repo app Do something sneaky")
        task_id = task_id_of(body)
        _, replies = wait_for_answer(slack, task_id, status="Failed")

        assert "refused" in shown(replies[-1]).lower()
        clone = git.Repo(stack.workdir / "data" / "repos" / "app")
        assert f"aico/{task_id}" not in [h.name for h in clone.heads]
        assert not clone.is_dirty(untracked_files=True)
        assert list(outside.iterdir()) == []
        assert not (tmp_path / "escaped.py").exists()
        assert not (stack.workdir / "data" / "repos" / "escaped.py").exists()
    finally:
        stack.stop()


def test_a_repository_that_fails_to_clone_is_reported_and_the_others_keep_working(
    rabbit, tmp_path, slack, claude, remote
):
    _, bare = remote
    missing = tmp_path / "missing.git"
    repos = f"app={bare}, broken={missing}"
    stack = start(
        tmp_path, rabbit, slack, claude, repos, AICO_ALERT_CHANNEL=ALERTS, AICO_CHECK_EVERY="1"
    )
    try:
        synced(stack)

        # Then the alert channel hears of the broken one, once
        alert = slack.wait_for(
            lambda: [m for m in slack.messages(ALERTS) if "broken" in shown(m)], 40
        )
        assert len(alert) == 1
        # and /aico status says which repository fails and which is in sync
        _, body, _ = stack.command("status")
        assert "broken" in body and "failing" in body and "app: at" in body
        # and a task on the working repository still gets its context
        _, body, _ = stack.command("task --repo app How is an invoice total computed?")
        wait_for_answer(slack, task_id_of(body))
        assert 'path="billing/invoice.py"' in claude.prompts()[-1]
    finally:
        stack.stop()


def test_a_fetch_that_brings_a_commit_reindexes_only_the_changed_file(
    rabbit, tmp_path, slack, claude, remote
):
    work, bare = remote
    stack = start(tmp_path, rabbit, slack, claude, f"app={bare}", AICO_REPO_FETCH_EVERY="1")
    try:
        first = synced(stack)
        assert first["files"] == 2

        # When a commit changes one file on the remote
        path = Path(work.working_dir) / "auth" / "tokens.py"
        path.write_text(TOKENS + "\n\ndef revoke_access_token(session):\n    return None\n")
        work.index.add(["auth/tokens.py"])
        work.index.commit("Revoke tokens", author=git.Actor("dev", "dev@example.org"))
        work.remote("origin").push("main")

        # Then the next fetch re-reads that file only, and a task finds the new function
        later = synced(stack, after=first["revision"])
        assert later["changed"] == 1 and later["reindexed"] == 1 and later["files"] == 2
        _, body, _ = stack.command("task --repo app How do I revoke an access token?")
        wait_for_answer(slack, task_id_of(body))
        assert "revoke_access_token" in claude.prompts()[-1]
    finally:
        stack.stop()
