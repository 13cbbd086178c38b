"""Held-out repositories with real history for bench/retrieval.py, built from Debian's patches.

    .venv/bin/python -m bench.patchrepos [--package NAME ...] [--out DIR]

bench/retrieval.py's task-like queries need git history: a commit's subject as the query, the
files it changed as the targets, the tree before it as the index. The only such history on the
machine the retriever was tuned on is aico's own, so its held-out figures came from aico too.
Debian's source packages carry the rest: each keeps the upstream release and, in
`debian/patches/`, the fixes Debian applies on top, most of them upstream commits picked back
(security fixes, bug fixes) and the others written by a maintainer for a concrete task ("Disable
domain tests to prevent internet access during build"). Each patch has a subject line (DEP-3's
`Subject:` or `Description:`, or git format-patch's `Subject: [PATCH]`) and a diff.

For each package this downloads the Debian part with `apt-get source --download-only` (a private
list of the machine's own Debian mirrors with their `deb-src` twin, in a scratch directory: the
machine's apt state is not touched) and the upstream release from the same place or, where the
mirror has no upstream tarball, as the source distribution of the same version from the package
index (`pip download --no-binary :all:`). It then makes a git repository: the upstream tree as the
first commit, and one commit per patch of `debian/patches/series`, in order, with the patch's
subject as the commit's subject. A patch that does not apply to the tree (a file the source
distribution leaves out) or changes nothing is skipped. It prints the repositories' paths, one a
line, to be passed to `python -m bench.retrieval --commits-only --repo PATH ...`.

None of these repositories was looked at while the retriever's weights were chosen: every commit
of them is held out.
"""

from __future__ import annotations

import argparse
import email.header
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.retrieval import PIP_DOWNLOAD

CACHE = Path(__file__).parent / ".cache" / "patchrepos"
# Debian source package -> its name on the package index (for the upstream release when the
# mirror has no .orig tarball): those whose Debian part the mirror had, with patches to the code.
# The misses of the first six were read to choose the retriever's rules (TUNING); the rest are
# held out (HELD_OUT), none of their results read before the rules were fixed.
TUNING = {
    "jinja2": "jinja2",
    "python-tornado": "tornado",
    "python-urllib3": "urllib3",
    "python-werkzeug": "werkzeug",
    "python-cryptography": "cryptography",
    "sphinx": "sphinx",
}
HELD_OUT = {
    "twisted": "twisted",
    "pillow": "pillow",
    "setuptools": "setuptools",
    "mercurial": "mercurial",
    "numpy": "numpy",
    "gunicorn": "gunicorn",
    "python-asyncssh": "asyncssh",
    "python-pip": "pip",
    "python-httplib2": "httplib2",
    "flask": "flask",
    "python-markdown": "markdown",
    "python-hypothesis": "hypothesis",
    "ansible-core": "ansible-core",
    "python-xmltodict": "xmltodict",
    "python-cffi": "cffi",
    "sqlalchemy": "sqlalchemy",
}
PACKAGES = {**TUNING, **HELD_OUT}
IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]


@dataclass(frozen=True)
class Patch:
    subject: str
    body: bytes


# --- apt in a scratch directory ----------------------------------------------------------------


def apt_options(scratch: Path) -> list[str]:
    """apt-get options that read the machine's Debian mirrors as deb-src and keep all state in
    `scratch` (lists, cache), so nothing of the machine's apt configuration changes."""
    parts = scratch / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    (scratch / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (scratch / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    stanzas: list[str] = []
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        stanzas.append(re.sub(r"(?m)^Types:.*$", "Types: deb-src", source.read_text()))
    lines: list[str] = []
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        lines = [
            "deb-src" + line[3:]
            for line in legacy.read_text().splitlines()
            if line.startswith("deb ")
        ]
    (parts / "src.sources").write_text("\n\n".join(stanzas))
    (parts / "src.list").write_text("\n".join(lines) + "\n")
    return [
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={parts}",
        "-o",
        f"Dir::State::Lists={scratch / 'lists'}",
        "-o",
        f"Dir::Cache={scratch / 'cache'}",
        "-q",
    ]


def download(package: str, pypi_name: str, into: Path, options: list[str]) -> tuple[Path, Path]:
    """(the debian.tar.xz, the upstream tarball) of `package`, downloaded into `into`."""
    # apt-get exits 100 when one of the files is missing; the others are there all the same
    subprocess.run(
        ["apt-get", *options, "source", "--download-only", package],
        cwd=into,
        capture_output=True,
    )
    debian = next(into.glob(f"{package}_*.debian.tar.*"), None)
    if debian is None:
        raise RuntimeError(f"{package}: no Debian source package on the mirror")
    upstream = next(
        (p for p in into.glob(f"{package}_*.orig.tar.*") if not p.name.endswith(".asc")), None
    )
    if upstream is None:
        version = debian.name.split("_")[1].rsplit("-", 1)[0].split(":")[-1]
        version = re.sub(r"\+(dfsg|ds)\d*$", "", version)
        subprocess.run(
            [*PIP_DOWNLOAD, "-d", str(into / "sdist"), f"{pypi_name}=={version}"],
            check=True,
            capture_output=True,
        )
        upstream = next((into / "sdist").iterdir())
    return debian, upstream


# --- patches -----------------------------------------------------------------------------------


def subject_of(header: str) -> str:
    """A patch's subject: its `Subject:` (git's `[PATCH n/m]` cut, RFC 2047 words decoded, folded
    lines joined), else the first line of its DEP-3 `Description:`; "" when it has neither."""
    for field in ("Subject", "Description"):
        match = re.search(rf"(?mi)^{field}:[ \t]*(.*(?:\n[ \t]+\S.*)*)", header)
        if match:
            text = match.group(1)
            if field == "Description":
                text = text.split("\n")[0]
            decoded = "".join(
                part.decode(charset or "utf-8", "replace") if isinstance(part, bytes) else part
                for part, charset in email.header.decode_header(" ".join(text.split()))
            )
            subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", decoded).strip()
            if subject:
                return subject
    return ""


def read_patches(debian_dir: Path) -> list[Patch]:
    patches_dir = debian_dir / "patches"
    series = patches_dir / "series"
    if not series.exists():
        return []
    patches: list[Patch] = []
    for line in series.read_text().splitlines():
        name = line.split("#")[0].strip().split(" ")[0]
        if not name or not (patches_dir / name).is_file():
            continue
        body = (patches_dir / name).read_bytes()
        header = body.split(b"\n---", 1)[0].split(b"\ndiff ", 1)[0].split(b"\nIndex: ", 1)[0]
        patches.append(Patch(subject_of(header.decode("utf-8", "replace")), body))
    return patches


def unpack(tarball: Path, into: Path) -> None:
    """The tarball's files into `into`, its single top directory removed (an upstream release's
    `name-version/`, the Debian part's `debian/`)."""
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(tarball) as archive:
        archive.extractall(scratch, filter="data")
        entries = list(Path(scratch).iterdir())
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(scratch)
        for entry in top.iterdir():
            shutil.move(str(entry), into / entry.name)


def git(repo: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    when = "2000-01-01T00:00:00"  # the same repository, byte for byte, on every build
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    return subprocess.run(
        ["git", *IDENTITY, *args], cwd=repo, input=stdin, capture_output=True, env=env
    )


def apply(repo: Path, patch: Patch) -> bool:
    """Whether `patch` applied to the work tree (git's exact apply, then patch(1) with fuzz
    where it is installed); one that does not apply leaves the tree as it was."""
    if git(repo, "apply", "--whitespace=nowarn", "-p1", "-", stdin=patch.body).returncode == 0:
        return True
    if shutil.which("patch") is None:
        return False
    fuzzy = subprocess.run(
        ["patch", "-p1", "--batch", "--forward", "--fuzz=2", "--no-backup-if-mismatch", "-s"],
        cwd=repo,
        input=patch.body,
        capture_output=True,
    )
    if fuzzy.returncode != 0:
        git(repo, "checkout", "--", ".")
        git(repo, "clean", "-fdq")
        return False
    return True


def build(package: str, pypi_name: str, out: Path, options: list[str]) -> tuple[Path, int, int]:
    """The git repository of `package` in `out` (built once), with (patches applied, skipped)."""
    repo = out / package
    done = repo / ".git" / "bench-patches"
    if done.exists():
        applied, skipped = (int(n) for n in done.read_text().split())
        return repo, applied, skipped
    with tempfile.TemporaryDirectory() as scratch:
        debian_tar, upstream = download(package, pypi_name, Path(scratch), options)
        applied, skipped = make_repo(repo, upstream, debian_tar, f"{package}: upstream release")
    done.write_text(f"{applied} {skipped}\n")
    return repo, applied, skipped


def make_repo(repo: Path, upstream: Path, debian_tar: Path, first: str) -> tuple[int, int]:
    """A git repository in `repo`: the `upstream` tarball's tree as the commit `first`, then one
    commit per patch of the Debian part's series, its subject as the commit's. (applied, skipped)"""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    unpack(upstream, repo)
    shutil.rmtree(repo / "debian", ignore_errors=True)  # a release that ships its own
    git(repo, "init", "-q")
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", first)
    applied = skipped = 0
    with tempfile.TemporaryDirectory() as scratch:
        unpack(debian_tar, Path(scratch))
        for patch in read_patches(Path(scratch)):
            if not patch.subject or not apply(repo, patch):
                skipped += 1
                continue
            git(repo, "add", "-A", "-f")
            if git(repo, "commit", "-q", "-m", patch.subject).returncode != 0:
                skipped += 1  # it changed nothing
                continue
            applied += 1
    return applied, skipped


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m bench.patchrepos", description=__doc__.split("\n")[0]
    )
    cli.add_argument("--package", action="append", help="Debian source packages (default: all)")
    cli.add_argument(
        "--set", choices=("tuning", "held-out"), help="only the tuning or the held-out packages"
    )
    cli.add_argument("--out", type=Path, default=CACHE, help="where the repositories go")
    args = cli.parse_args(argv)
    sets = {"tuning": list(TUNING), "held-out": list(HELD_OUT), None: list(PACKAGES)}
    chosen = args.package or sets[args.set]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        options = apt_options(Path(scratch))
        update = subprocess.run(["apt-get", *options, "update"], capture_output=True, text=True)
        if update.returncode != 0:
            print(f"apt-get update failed: {update.stderr.strip()}", file=sys.stderr)
            return 1
        for package in chosen:
            try:
                repo, applied, skipped = build(
                    package, PACKAGES.get(package, package), args.out, options
                )
            except (RuntimeError, subprocess.CalledProcessError, StopIteration) as exc:
                print(f"{package}: skipped ({exc})", file=sys.stderr)
                continue
            print(f"{package}: {applied} patches as commits, {skipped} skipped", file=sys.stderr)
            print(repo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
