"""bench/patchrepos.py without the mirror: a patch's subject read the ways Debian writes it, and
a release plus its patch series made into a git history, one commit per patch that applies."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from bench.patchrepos import make_repo, subject_of


def test_a_patch_subject_is_read_from_git_and_from_dep3_headers() -> None:
    git_style = "From 87a8 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 2/3] Make the in-operator\n"
    assert subject_of(git_style + " case insensitive\n\nBody") == (
        "Make the in-operator case insensitive"
    )
    assert subject_of("Description: Fix CVE-2024-1 \n more prose\nOrigin: upstream") == (
        "Fix CVE-2024-1"
    )
    encoded = "Subject: =?utf-8?q?twisted=2Eweb=2Epages=2E=7BErrorPage_=E2=86=92_errorPage?=\n"
    assert subject_of(encoded) == "twisted.web.pages.{ErrorPage → errorPage"
    assert subject_of("Author: someone\nForwarded: no\n") == ""


def _tarball(path: Path, top: str, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _diff(path: str, old: str, new: str) -> str:
    return f"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_each_patch_that_applies_becomes_a_commit_with_its_subject(tmp_path: Path) -> None:
    upstream = _tarball(
        tmp_path / "pkg_1.0.orig.tar.gz",
        "pkg-1.0",
        {"src/app.py": "x = 1\n", "README": "hello\n", "debian/rules": "upstream's own\n"},
    )
    fix = "Subject: [PATCH] app: x is two\n---\n" + _diff("src/app.py", "x = 1", "x = 2")
    stale = "Description: a file the release leaves out\n---\n" + _diff("gone.py", "a", "b")
    untitled = "Author: nobody\n---\n" + _diff("README", "hello", "hi")
    debian = _tarball(
        tmp_path / "pkg_1.0-1.debian.tar.gz",
        "debian",
        {
            "patches/series": "fix.patch\n# a comment\nstale.patch\nuntitled.patch\nmissing\n",
            "patches/fix.patch": fix,
            "patches/stale.patch": stale,
            "patches/untitled.patch": untitled,
        },
    )
    repo = tmp_path / "repo"

    assert make_repo(repo, upstream, debian, "pkg: upstream release") == (1, 2)

    def git(*args: str) -> list[str]:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout.split()

    assert git("log", "--format=%s") == ["app:", "x", "is", "two", "pkg:", "upstream", "release"]
    assert git("show", "--format=", "--name-only", "HEAD") == ["src/app.py"]
    assert (repo / "src/app.py").read_text() == "x = 2\n"
    assert (repo / "README").read_text() == "hello\n"  # the untitled patch is not applied
    assert not (repo / "debian").exists()
    assert git("status", "--porcelain") == []  # the patch that did not apply left nothing
