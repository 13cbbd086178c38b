"""`aico scaler simulate`, run as operators run it: the real command in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPIKE = ROOT / "bench" / "traces" / "spike.csv"
KEYS = {"p50_wait_s", "p95_wait_s", "max_wait_s", "worker_seconds", "scale_events"}


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aico.cli", "scaler", "simulate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("policy", ["threshold", "queue-ratio", "aico"])
def test_a_shipped_trace_gives_one_json_object(policy):
    done = simulate("--trace", str(SPIKE), "--policy", policy, "--max", "10")

    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures.keys() >= KEYS
    assert figures["policy"] == policy
    assert figures["tasks"] == len(SPIKE.read_text().splitlines()) - 1
    assert 0 <= figures["p50_wait_s"] <= figures["p95_wait_s"] <= figures["max_wait_s"]
    assert figures["settings"] == {"concurrency": 8, "min": 1, "max": 10, "startup_s": 10.0}


def test_the_options_change_the_pool(tmp_path):
    trace = tmp_path / "two.csv"
    trace.write_text("arrival_s,service_s\n0,10\n0,10\n")

    one_slot = json.loads(
        simulate(
            "--trace", str(trace), "--policy", "threshold", "--concurrency", "1", "--max", "1"
        ).stdout
    )
    two_slots = json.loads(
        simulate("--trace", str(trace), "--policy", "threshold", "--concurrency", "2").stdout
    )

    assert one_slot["max_wait_s"] == 10.0
    assert two_slots["max_wait_s"] == 0.0


def bad_trace(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ["--trace", "no/such/trace.csv", "--policy", "aico"],
        ["--policy", "aico"],
        ["--trace", str(SPIKE), "--policy", "kubernetes"],
        ["--trace", str(SPIKE), "--policy", "aico", "--min", "3", "--max", "2"],
        ["--trace", str(SPIKE), "--policy", "aico", "--min", "0"],
        ["--trace", str(SPIKE), "--policy", "aico", "--concurrency", "eight"],
        ["--trace", str(SPIKE), "--policy", "aico", "--startup", "-5"],
    ],
    ids=[
        "missing file",
        "no trace",
        "unknown policy",
        "min above max",
        "min 0",
        "not a number option",
        "negative startup",
    ],
)
def test_bad_options_are_one_clear_line_and_exit_2(args):
    done = simulate(*args)

    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "text",
    [
        "arrival,service\n0,1\n",
        "",
        "arrival_s,service_s\n0,abc\n",
        "arrival_s,service_s\n0,1\n-1,2\n",
        "arrival_s,service_s\n0,1,2\n",
        "arrival_s,service_s\nnan,1\n",
    ],
    ids=["wrong header", "empty file", "not a number", "negative", "three columns", "nan"],
)
def test_bad_traces_are_one_clear_line_and_exit_2(tmp_path, text):
    done = simulate("--trace", bad_trace(tmp_path, text), "--policy", "threshold")

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_the_line_says_where_the_trace_is_wrong(tmp_path):
    done = simulate(
        "--trace", bad_trace(tmp_path, "arrival_s,service_s\n0,1\n5,x\n"), "--policy", "aico"
    )

    assert ":3:" in done.stderr  # the file's line 3


def test_help_states_the_defaults():
    done = simulate("--help")

    assert done.returncode == 0
    for default in ("default 8", "default 1", "default 5", "default 10"):
        assert default in done.stdout
