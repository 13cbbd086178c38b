"""Held-out evaluation of the scaling policies: fresh random traces, many settings, one count.

    .venv/bin/python -m bench.heldout                  # the report set (seeds 5000 on)
    .venv/bin/python -m bench.heldout --set tuning     # the set aico's constants were tuned on

Every case is a trace drawn from one of the families of bench/traces.py (steady, heavy-tail,
bursty, diurnal, spike, ramp) with parameters drawn from the case's seed, none of them a seed
used for bench/traces/, and a setting (slots per worker, minimum and maximum workers, start-up
time). Two kinds of case:

- `shipped`: the families at the sizes of the shipped traces (bench/traces/), other seeds, run
  with `aico scaler simulate`'s default flags (C=8, 1-5 workers, 10 s start-up) and with the
  benchmark's (C=8, 1-10 workers);
- `scaled`: a setting drawn from C in 1..16, minimum 1..2, maximum 5..20, start-up 0..30 s, and
  a trace whose peak load is 25-85% of what the maximum pool can serve (a trace the maximum
  cannot serve makes every policy run the maximum, and then no policy beats another).

All three policies run every case through the same simulator code as `aico scaler simulate`
(`aico` with its scikit-learn forecast unless --no-forecast). A case clears the strict bar when
aico's p95 wait is below both baselines' with no more worker-seconds than either, or its
worker-seconds are below both at no higher p95 (bench.scaling.verdict). It prints the count
that clears, per kind and family and per slots per worker (the failures gather at C of 1-2,
where queue-ratio runs a worker per queued task and threshold about the minimum pool), and
every failure with its figures.

The tuning set (seeds 2000 on) is what aico's constants were chosen on; the report set (seeds
5000 on) was only run to report. Neither overlaps the seeds of bench/traces/ (1-4, 101-108).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench import traces
from bench.scaling import BASELINES, verdict
from core.adapters.forecaster import regressor
from core.domain.scaling import make_policy
from core.usecases.forecast import ArrivalForecast
from core.usecases.simulation import simulate

Task = tuple[float, float]
POLICIES = (*BASELINES, "aico")
SEEDS = {"tuning": 2000, "report": 5000}
DEFAULT = (8, 1, 5, 10.0)  # aico scaler simulate's flags when none are given
BENCH = (8, 1, 10, 10.0)  # bench/scaling.py's tuning setting


@dataclass(frozen=True)
class Case:
    kind: str  # "shipped" | "scaled"
    family: str
    seed: int
    concurrency: int
    minimum: int
    maximum: int
    startup: float

    def describe(self) -> str:
        return (
            f"{self.kind} {self.family} seed {self.seed}: C={self.concurrency},"
            f" {self.minimum}-{self.maximum} workers, {self.startup:g} s start-up"
        )


def _mean_service(median: float, sigma: float) -> float:
    return median * math.exp(sigma * sigma / 2)


def shipped(family: str, seed: int) -> list[Task]:
    """The family at the size of the shipped trace, with another seed and nearby parameters."""
    rng = random.Random(seed)
    u = rng.uniform(0.8, 1.2)
    if family == "steady":
        return traces.steady(seed, 1.5 * u, 2, 10.0, 0.6)
    if family == "heavy-tail":
        return traces.steady(seed, 1.0 * u, 2, 8.0, 1.2)
    if family == "bursty":
        return traces.bursty(seed, 2, 0.3 * u, (4, 16), (40, 150), (30, 90), 20.0)
    if family == "diurnal":
        return traces.diurnal(seed, 3, 1, 0.2, 3.2 * u)
    if family == "spike":
        return traces.spike(seed, 2, 0.5 * u, [(60, round(400 * u), 60)])
    if family == "ramp":
        return traces.ramp(seed, 2, 0.1, 3.2 * u, 12.0)
    raise ValueError(family)


def scaled(family: str, seed: int, slots: int) -> list[Task]:
    """The family with its parameters drawn from `seed`, its peak load a share of `slots`."""
    rng = random.Random(seed)
    peak = rng.uniform(0.25, 0.85) * slots  # slots busy at the peak, on average
    median, sigma = rng.uniform(5.0, 25.0), rng.uniform(0.4, 0.9)
    mean = _mean_service(median, sigma)
    hours = rng.uniform(1.0, 2.0)
    if family == "steady":
        return traces.steady(seed, peak / mean, hours, median, sigma)
    if family == "heavy-tail":
        sigma = rng.uniform(1.0, 1.4)
        return traces.steady(seed, peak / _mean_service(median, sigma), hours, median, sigma)
    if family == "bursty":
        base = rng.uniform(0.05, 0.4) * peak / _mean_service(10.0, 0.6)
        spread = rng.uniform(20, 120)
        size = max(2, round(peak * spread / mean * rng.uniform(0.5, 1.5)))
        gap = rng.uniform(2, 10)
        return traces.bursty(
            seed, hours, base, (gap, gap * 2), (size // 2, size), (spread / 2, spread), median
        )
    if family == "diurnal":
        mean = _mean_service(10.0, 0.6)
        days = rng.choice((1, 2))
        return traces.diurnal(
            seed, max(hours, 1.5), days, 0.05 * peak / mean, peak / mean, noise=0.2
        )
    if family == "spike":
        mean = _mean_service(10.0, 0.6)
        count = max(5, round(peak * rng.uniform(2, 10)))
        over = rng.uniform(10, 120)
        return traces.spike(
            seed, hours, rng.uniform(0.1, 0.5) * peak / mean, [(hours * 30, count, over)]
        )
    if family == "ramp":
        return traces.ramp(seed, hours, 0.03 * peak / mean, peak / mean, median)
    raise ValueError(family)


FAMILIES = ("steady", "heavy-tail", "bursty", "diurnal", "spike", "ramp")


def cases(which: str, scaled_per_family: int = 6) -> list[Case]:
    base = SEEDS[which]
    out = []
    for i, family in enumerate(FAMILIES):
        seed = base + i
        for setting in (DEFAULT, BENCH):
            out.append(Case("shipped", family, seed, *setting))
    rng = random.Random(base)
    for i, family in enumerate(FAMILIES):
        for k in range(scaled_per_family):
            setting = (
                rng.choice((1, 2, 4, 8, 16)),
                rng.choice((1, 1, 2)),
                rng.choice((5, 8, 10, 20)),
                float(rng.choice((0, 5, 10, 10, 20, 30))),
            )
            out.append(Case("scaled", family, base + 100 + 10 * i + k, *setting))
    return out


def trace_of(case: Case) -> list[Task]:
    if case.kind == "shipped":
        return shipped(case.family, case.seed)
    return scaled(case.family, case.seed, case.concurrency * case.maximum)


def run_case(
    case: Case, policy: str, forecast: bool = True, aico: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One policy's figures on one case; `aico` overrides AicoPolicy's constants (tuning)."""
    chosen = make_policy(policy, case.minimum, case.maximum, case.concurrency, case.startup)
    for name, value in (aico or {}).items() if policy == "aico" else ():
        setattr(chosen, name, value)
    model = ArrivalForecast(regressor) if policy == "aico" and forecast else None
    return simulate(trace_of(case), chosen, case.concurrency, case.minimum, case.startup, model)


def evaluate(
    all_cases: list[Case],
    forecast: bool = True,
    aico: dict[str, Any] | None = None,
    baselines: dict[tuple[Case, str], dict[str, Any]] | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> dict[Case, dict[str, dict[str, Any]]]:
    """Every policy on every case; `baselines` (if given) caches the baselines' figures."""
    cache = baselines if baselines is not None else {}
    own = pool is None
    executor = pool or ProcessPoolExecutor()
    jobs = {}
    for case in all_cases:
        for policy in POLICIES:
            if policy != "aico" and (case, policy) in cache:
                continue
            jobs[(case, policy)] = executor.submit(run_case, case, policy, forecast, aico)
    results: dict[Case, dict[str, dict[str, Any]]] = {case: {} for case in all_cases}
    for (case, policy), job in jobs.items():
        results[case][policy] = job.result()
        if policy != "aico":
            cache[(case, policy)] = results[case][policy]
    for case in all_cases:
        for policy in BASELINES:
            results[case].setdefault(policy, cache[(case, policy)])
    if own:
        executor.shutdown()
    return results


def _key(figures: dict[str, Any]) -> tuple[float, float]:
    return figures["p95_wait_s"], figures["worker_seconds"]


def report(results: dict[Case, dict[str, dict[str, Any]]]) -> list[str]:
    clears = {case: verdict(figures) == "**clears**" for case, figures in results.items()}
    lines = [f"aico clears the strict bar on {sum(clears.values())} of {len(clears)} cases"]
    for kind in ("shipped", "scaled"):
        for family in FAMILIES:
            mine = [c for c in clears if c.kind == kind and c.family == family]
            if mine:
                lines.append(f"  {kind:8} {family:11} {sum(clears[c] for c in mine)}/{len(mine)}")
    by_slots = sorted({c.concurrency for c in clears})
    lines.append(
        "  by slots per worker: "
        + ", ".join(
            f"C={n} {sum(clears[c] for c in clears if c.concurrency == n)}"
            f"/{sum(c.concurrency == n for c in clears)}"
            for n in by_slots
        )
    )
    failures = [case for case, ok in clears.items() if not ok]
    if failures:
        lines.append("failures (p95 wait s / worker-s: threshold, queue-ratio, aico):")
    for case in failures:
        figures = results[case]
        cells = ", ".join(
            f"{figures[p]['p95_wait_s']:.1f}/{figures[p]['worker_seconds']:,.0f}" for p in POLICIES
        )
        tie = any(_key(figures["aico"]) == _key(figures[p]) for p in BASELINES)
        note = " (a tie: the same figures as a baseline)" if tie else ""
        lines.append(f"  {case.describe()}: {cells}; {verdict(figures)}{note}")
    return lines


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.heldout", description=__doc__)
    cli.add_argument("--set", choices=sorted(SEEDS), default="report", help="which seeds")
    cli.add_argument("--per-family", type=int, default=6, help="scaled cases per family")
    cli.add_argument("--no-forecast", action="store_true", help="aico without its forecast")
    args = cli.parse_args(argv)
    results = evaluate(cases(args.set, args.per_family), forecast=not args.no_forecast)
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
