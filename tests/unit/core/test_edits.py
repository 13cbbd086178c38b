"""The rules a change proposed by Claude must pass before aico writes anything."""

from __future__ import annotations

import pytest

from core.domain.edits import (
    EDIT_TOOL,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    ChangeSet,
    Edit,
    EditRefused,
    apply_edit,
    check_path,
    plan_changes,
    read_changes,
)
from core.errors import InvalidInput


def files(tree: dict[str, str] | None = None):
    """A reader over an in-memory repository: path -> content."""
    return lambda path: (tree or {}).get(path)


@pytest.mark.parametrize(
    "path, normal",
    [
        ("src/app.py", "src/app.py"),
        ("./src//app.py", "src/app.py"),
        ("src/./app.py", "src/app.py"),
        ("src\\app.py", "src/app.py"),
        (".gitignore", ".gitignore"),
        (".github/CODEOWNERS", ".github/CODEOWNERS"),
        ("docs/environment.md", "docs/environment.md"),
        ("my.git/notes.txt", "my.git/notes.txt"),
    ],
)
def test_an_ordinary_path_is_normalised(path, normal):
    assert check_path(path) == normal


@pytest.mark.parametrize(
    "path, reason",
    [
        ("../secrets.txt", "outside the repository"),
        ("src/../../x.py", "outside the repository"),
        ("..\\..\\x.py", "outside the repository"),
        ("/etc/passwd", "absolute"),
        ("C:\\Windows\\system.ini", "absolute"),
        ("c:/x.py", "absolute"),
        ("\\\\server\\share\\x.py", "absolute"),
        ("", "empty"),
        (".", "names no file"),
        ("./", "directory"),
        ("src/", "directory"),
        ("a\x00b.py", "control"),
        ("a\nb.py", "control"),
        (".g\u200bit/config", "invisible"),
        (".git/config", ".git"),
        (".GIT/HEAD", ".git"),
        ("sub/.git/hooks/pre-commit", ".git"),
        (".git./config", ".git"),
        ("GIT~1/config", ".git"),
        (".github/workflows/ci.yml", "CI workflow"),
        (".GitHub/Workflows/deploy.yaml", "CI workflow"),
        (".github/actions/setup/action.yml", "CI action"),
        (".gitlab-ci.yml", "CI"),
        (".circleci/config.yml", "CI"),
        ("Jenkinsfile", "CI"),
        (".travis.yml", "CI"),
        ("azure-pipelines.yml", "CI"),
        (".buildkite/pipeline.yml", "CI"),
        ("bitbucket-pipelines.yml", "CI"),
        (".drone.yml", "CI"),
        (".env", "environment"),
        ("config/.env.production", "environment"),
        ("certs/server.pem", "key"),
        ("deploy/server.key", "key"),
        ("id_rsa", "SSH key"),
        ("home/.ssh/id_ed25519.pub", "secrets directory"),
        ("keys/id_rsa.pub", "SSH key"),
        ("client.p12", "key store"),
        (".npmrc", "credentials"),
        (".pypirc", "credentials"),
        (".netrc", "credentials"),
        ("config/secrets.yml", "secrets"),
        ("credentials.json", "credentials"),
        (".aws/config", "secrets directory"),
        (".gitattributes", "attributes"),
        ("vendor/.gitattributes", "attributes"),
        (".gitmodules", "submodules"),
        (".pre-commit-config.yaml", "hook"),
        (".husky/pre-commit", "hooks"),
    ],
)
def test_a_dangerous_path_is_refused_with_its_reason(path, reason):
    with pytest.raises(EditRefused, match="(?i)" + reason.replace(".", r"\.")):
        check_path(path)


def test_a_refusal_is_input_the_user_reads():
    assert issubclass(EditRefused, InvalidInput)


def test_the_tool_is_a_claude_tool_definition():
    assert EDIT_TOOL["name"] == "propose_changes"
    schema = EDIT_TOOL["input_schema"]
    assert schema["required"] == ["summary", "edits"]
    assert set(schema["properties"]["edits"]["items"]["properties"]) == {
        "path",
        "search",
        "replace",
    }
    assert "smallest" in EDIT_TOOL["description"]


def test_read_changes_gives_normalised_edits_and_deletes():
    changes = read_changes(
        {
            "summary": "Fix the greeting\n(typo)",
            "edits": [
                {"path": "./app/hello.py", "search": "Helo", "replace": "Hello"},
                {"path": "README.md", "replace": "# Hello\n"},
            ],
            "delete": ["old.txt", "old.txt"],
        }
    )
    assert changes == ChangeSet(
        "Fix the greeting (typo)",
        (Edit("app/hello.py", "Helo", "Hello"), Edit("README.md", None, "# Hello\n")),
        ("old.txt",),
    )
    assert changes.paths == ["app/hello.py", "README.md", "old.txt"]


@pytest.mark.parametrize(
    "tool_input, reason",
    [
        ("edit it", "not an object"),
        ({"edits": [{"path": "a", "replace": "x"}]}, "no summary"),
        ({"summary": "  ", "edits": [{"path": "a", "replace": "x"}]}, "no summary"),
        ({"summary": "s", "edits": []}, "no edits"),
        ({"summary": "s", "edits": {"path": "a"}}, "must be a list"),
        ({"summary": "s", "edits": ["a.py"]}, "edit 1 is not an object"),
        ({"summary": "s", "edits": [{"replace": "x"}]}, "edit 1 has no path"),
        ({"summary": "s", "edits": [{"path": "a.py"}]}, "no replace text"),
        ({"summary": "s", "edits": [{"path": "a.py", "search": 3, "replace": ""}]}, "search"),
        ({"summary": "s", "edits": [{"path": "a.py", "search": "", "replace": "x"}]}, "empty"),
        ({"summary": "s", "edits": [{"path": "../a.py", "replace": "x"}]}, "outside"),
        ({"summary": "s", "edits": [], "delete": [".git/HEAD"]}, ".git"),
        ({"summary": "s", "edits": [], "delete": [7]}, "must list paths"),
        (
            {"summary": "s", "edits": [{"path": "a.py", "replace": "x"}], "delete": ["a.py"]},
            "both edited and deleted",
        ),
        (
            {
                "summary": "s",
                "edits": [{"path": f"f{i}.py", "replace": "x"} for i in range(MAX_FILES + 1)],
            },
            "at most",
        ),
    ],
)
def test_a_malformed_change_is_refused(tool_input, reason):
    with pytest.raises(EditRefused, match=reason.replace(".", r"\.")):
        read_changes(tool_input)


def test_a_long_summary_is_cut_to_one_short_line():
    changes = read_changes({"summary": "word " * 100, "edits": [{"path": "a", "replace": ""}]})
    assert len(changes.summary) == 100 and changes.summary.endswith("…")


def test_search_text_found_once_is_replaced():
    edit = Edit("a.py", "return 1", "return 2")
    assert apply_edit("def f():\n    return 1\n", edit) == "def f():\n    return 2\n"


def test_search_text_that_does_not_occur_is_refused():
    with pytest.raises(EditRefused, match="0 matches"):
        apply_edit("x = 1\n", Edit("a.py", "y = 1", "y = 2"))


def test_search_text_that_occurs_twice_is_refused():
    with pytest.raises(EditRefused, match="occurs 2 times"):
        apply_edit("x = 1\nx = 1\n", Edit("a.py", "x = 1", "x = 2"))


def test_overlapping_occurrences_count_as_more_than_one():
    with pytest.raises(EditRefused, match="occurs 2 times"):
        apply_edit("aaa", Edit("a.txt", "aa", "b"))


def test_searching_a_missing_file_is_refused():
    with pytest.raises(EditRefused, match="does not exist"):
        apply_edit(None, Edit("a.py", "x", "y"))


def test_a_whole_file_creates_or_overwrites():
    assert apply_edit(None, Edit("new.py", None, "print()\n")) == "print()\n"
    assert apply_edit("old\n", Edit("a.py", None, "new\n")) == "new\n"


def test_a_plan_applies_every_edit_in_order_and_marks_deletes():
    changes = read_changes(
        {
            "summary": "s",
            "edits": [
                {"path": "a.py", "search": "one", "replace": "two"},
                {"path": "a.py", "search": "two", "replace": "three"},
                {"path": "b.py", "replace": "new\n"},
            ],
            "delete": ["c.py"],
        }
    )
    plan = plan_changes(changes, files({"a.py": "one\n", "c.py": "gone\n"}))
    assert plan == {"a.py": "three\n", "b.py": "new\n", "c.py": None}


def test_one_refused_edit_refuses_the_whole_plan():
    changes = read_changes(
        {
            "summary": "s",
            "edits": [
                {"path": "a.py", "replace": "fine\n"},
                {"path": "b.py", "search": "missing", "replace": "x"},
            ],
        }
    )
    with pytest.raises(EditRefused, match=r"b\.py"):
        plan_changes(changes, files({"b.py": "something else\n"}))


def test_deleting_a_missing_file_is_refused():
    changes = read_changes({"summary": "s", "edits": [], "delete": ["nope.py"]})
    with pytest.raises(EditRefused, match="does not exist"):
        plan_changes(changes, files())


def test_a_change_that_changes_nothing_is_refused():
    changes = read_changes({"summary": "s", "edits": [{"path": "a.py", "replace": "same\n"}]})
    with pytest.raises(EditRefused, match="leaves every file as it is"):
        plan_changes(changes, files({"a.py": "same\n"}))


def test_a_file_and_its_directory_in_one_change_are_refused():
    changes = read_changes(
        {"summary": "s", "edits": [{"path": "a", "replace": "x"}, {"path": "a/b", "replace": "y"}]}
    )
    with pytest.raises(EditRefused, match="both a file and the directory"):
        plan_changes(changes, files())


def test_a_file_over_the_size_limit_is_refused():
    big = "x" * (MAX_FILE_BYTES + 1)
    changes = read_changes({"summary": "s", "edits": [{"path": "big.txt", "replace": big}]})
    with pytest.raises(EditRefused, match="at most 200,000"):
        plan_changes(changes, files())


def test_a_search_edit_that_makes_a_file_too_big_is_refused():
    edit = {"path": "a.txt", "search": "X", "replace": "y" * MAX_FILE_BYTES}
    changes = read_changes({"summary": "s", "edits": [edit]})
    with pytest.raises(EditRefused, match=r"a\.txt would be"):
        plan_changes(changes, files({"a.txt": "X\n"}))


def test_a_change_over_the_total_limit_is_refused():
    part = "x" * (MAX_FILE_BYTES - 10)
    count = MAX_TOTAL_BYTES // len(part) + 1
    edits = [{"path": f"f{i}.txt", "replace": part} for i in range(count)]
    changes = read_changes({"summary": "s", "edits": edits})
    with pytest.raises(EditRefused, match="may write at most 500,000"):
        plan_changes(changes, files())


def test_sizes_count_bytes_not_characters():
    text = "é" * (MAX_FILE_BYTES // 2 + 1)  # two bytes each in UTF-8
    changes = read_changes({"summary": "s", "edits": [{"path": "a.txt", "replace": text}]})
    with pytest.raises(EditRefused, match="bytes"):
        plan_changes(changes, files())
