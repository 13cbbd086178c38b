"""`aico scaler simulate`: a trace through the simulated pool under one policy, as JSON.

The trace is a CSV file with the header `arrival_s,service_s` and one task a line (seconds,
non-negative numbers). The `aico` policy gets the arrival forecast (scikit-learn), trained on the
trace's past as the simulation goes; the baselines get none.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from core.domain.scaling import make_policy
from core.usecases.forecast import ArrivalForecast
from core.usecases.simulation import simulate

HEADER = ("arrival_s", "service_s")


class TraceError(ValueError):
    """A trace or an option that cannot be simulated; the message says what and where."""


def read_trace(path: Path) -> list[tuple[float, float]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(f"no such trace file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read the trace {path}: {exc}") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(cell.strip() for cell in header) != HEADER:
        raise TraceError(f"{path}: the first line must be the header {','.join(HEADER)}")
    return [_task(path, line, row) for line, row in enumerate(rows, start=2) if row]


def _task(path: Path, line: int, row: list[str]) -> tuple[float, float]:
    if len(row) != 2:
        raise TraceError(f"{path}:{line}: expected 2 columns (arrival_s,service_s), got {len(row)}")
    try:
        arrival, service = float(row[0]), float(row[1])
    except ValueError:
        raise TraceError(f"{path}:{line}: not a number: {','.join(row)!r}") from None
    if not (math.isfinite(arrival) and math.isfinite(service)):
        raise TraceError(f"{path}:{line}: not a finite number: {','.join(row)!r}")
    if arrival < 0 or service < 0:
        raise TraceError(f"{path}:{line}: a negative number: {','.join(row)!r}")
    return arrival, service


def run(
    trace: list[tuple[float, float]],
    policy: str,
    concurrency: int = 8,
    minimum: int = 1,
    maximum: int = 5,
    startup: float = 10.0,
) -> dict[str, Any]:
    """The simulation's figures, with the settings it ran with."""
    if concurrency < 1:
        raise TraceError(f"--concurrency must be at least 1, got {concurrency}")
    if minimum < 1:
        raise TraceError(f"--min must be at least 1 (a pool of none never starts), got {minimum}")
    if minimum > maximum:
        raise TraceError(f"--min ({minimum}) must not be above --max ({maximum})")
    if not (math.isfinite(startup) and startup >= 0):
        raise TraceError(f"--startup must be a number of seconds >= 0, got {startup}")
    try:
        chosen = make_policy(policy, minimum, maximum, concurrency)
    except ValueError as exc:
        raise TraceError(str(exc)) from None
    forecast = None
    if policy == "aico":
        from core.adapters.forecaster import regressor  # scikit-learn: loaded only for aico

        forecast = ArrivalForecast(regressor)
    figures = simulate(trace, chosen, concurrency, minimum, startup, forecast=forecast)
    figures["settings"] = {
        "concurrency": concurrency,
        "min": minimum,
        "max": maximum,
        "startup_s": startup,
    }
    return figures


def command(args: argparse.Namespace) -> int:
    """`aico scaler simulate`: the figures as one JSON object on stdout; bad input is one line on
    stderr and exit code 2."""
    try:
        trace = read_trace(Path(args.trace))
        figures = run(
            trace, args.policy, args.concurrency, args.minimum, args.maximum, args.startup
        )
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(figures))
    return 0
