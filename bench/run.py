"""Benchmarks: memory_scheduler side by side with APScheduler 3, in one run.

    pip install -r bench/requirements.txt
    python bench/run.py            # full run (about ten minutes on 2 cores)
    python bench/run.py --quick    # shorter scenarios, one repetition
    python bench/run.py --write    # also write bench/RESULTS.md

Each measurement runs in its own subprocess (clean memory figures); the libraries
alternate within each repetition; the table shows medians and the ratio
APScheduler / memory_scheduler (above 1: memory_scheduler is better, for every
metric here lower is better, except firings/s where the ratio is inverted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
OURS, THEIRS = "memory_scheduler", "apscheduler"

# (label, scenario, kwargs, metrics, libraries)
Case = Tuple[str, str, Dict[str, Any], List[str], Tuple[str, str]]


def cases(quick: bool) -> List[Case]:
    secs = 4.0 if quick else 10.0
    both = (OURS, THEIRS)
    out: List[Case] = []
    for extra in (0, 10_000, 100_000):
        out.append((f"latency, {extra:,} extra jobs", "latency",
                    {"extra": extra, "seconds": secs}, ["p50_ms", "p99_ms", "max_ms"], both))
    out.append(("burst, 10,000 jobs due at once", "burst", {"jobs": 10_000},
                ["last_start_ms", "firings_per_s"], both))
    for jobs in (10_000, 100_000):
        for distinct in (False, True):
            kind = "distinct" if distinct else "20 shared"
            out.append((f"register {jobs:,}, {kind} expressions", "register",
                        {"jobs": jobs, "distinct": distinct},
                        ["us_per_job", "bytes_per_job"], both))
    out.append(("idle, 1,000 jobs, CPU over "
                f"{5 if quick else 20} s", "idle", {"jobs": 1000,
                                                   "seconds": 5.0 if quick else 20.0},
                ["cpu_ms"], both))
    out.append(("shutdown, idle pool", "shutdown", {}, ["shutdown_ms"], both))
    out.append(("micro: CronSchedule vs croniter", "micro", {},
                ["construct_us", "next_us"], (OURS, "croniter")))
    return out


def measure(scenario: str, library: str, kwargs: Dict[str, Any]) -> Dict[str, float]:
    lib = THEIRS if library == "croniter" else library
    args = [sys.executable, str(HERE / "scenarios.py"), scenario, lib]
    args += [f"{k}={json.dumps(v)}" for k, v in kwargs.items()]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{scenario} {library} failed:\n{result.stderr}")
    data: Dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", help="run only cases whose label contains this text")
    parser.add_argument("--write", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    rows: List[str] = []
    header = ("| scenario | metric | memory_scheduler | other | other / ours |\n"
              "|---|---|---:|---:|---:|")
    print(header, flush=True)
    for label, scenario, kwargs, metrics, libs in cases(args.quick):
        if args.only and args.only not in label:
            continue
        samples: Dict[str, List[Dict[str, float]]] = {lib: [] for lib in libs}
        for rep in range(reps):
            order = libs if rep % 2 == 0 else libs[::-1]  # alternate who goes first
            for lib in order:
                samples[lib].append(measure(scenario, lib, kwargs))
        for metric in metrics:
            ours = statistics.median(s[metric] for s in samples[libs[0]])
            theirs = statistics.median(s[metric] for s in samples[libs[1]])
            ratio = (ours / theirs if metric == "firings_per_s" else theirs / ours) \
                if ours and theirs else float("nan")
            name = "APScheduler" if libs[1] == THEIRS else libs[1]
            shown = f"{ratio:,.2f}" if ratio < 1 else f"{ratio:,.1f}"
            row = (f"| {label} | {metric} | {ours:,.2f} | {theirs:,.2f} ({name}) | "
                   f"{shown}x |")
            rows.append(row)
            print(row, flush=True)
    if args.write:
        machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}")
        command = "python bench/run.py" + (" --quick" if args.quick else "") + \
            (f" --reps {args.reps}" if args.reps else "")
        text = (f"# Benchmark results\n\n{date.today().isoformat()}, {machine}, "
                f"`{command}`, medians of {reps} run(s). The last column is other / ours, so "
                "above 1 means memory_scheduler is faster or smaller (for firings/s, "
                "ours / other).\n\n" + header + "\n"
                + "\n".join(rows) + "\n")
        results = HERE / "RESULTS.md"
        old = results.read_text() if results.exists() else ""
        marker = "\n## Profile"
        tail = old[old.index(marker):] if marker in old else ""
        results.write_text(text + tail)


if __name__ == "__main__":
    main()
