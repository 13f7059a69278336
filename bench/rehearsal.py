"""The multi-host failure rehearsal, long form (`make rehearsal`; needs root and iproute2, as the suite's short form).

    .venv/bin/python -m bench.rehearsal --rate 12 --window 15

Makes hosts of its own (network namespaces on this machine; no traffic leaves it), starts HAProxy, two API replicas
in remote mode, two workers, a Redis Cluster of 3 masters with a replica each and a queue Redis
(tests/support/rehearsal.py), then under frames at `--rate` through HAProxy kills an API replica, kills a worker in
a batch job, kills a cluster master and freezes the queue Redis for `--freeze` s. Per fault: frames sent, answered,
refused (503 with Retry-After), lost, P95 before / during / after; the goals. Writes bench/results/rehearsal.json
and prints the table of docs/RUNBOOK.md "Failure rehearsal". Everything it started is torn down, also on failure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.common import machine
from tests.support.rehearsal import FAULTS, Plan, Stack, run_rehearsal
from tests.support.server import ROOT

MODEL_CACHE = ROOT / "var" / "model-cache"  # where `make run` keeps OpenVINO's compile cache (MODEL_CACHE_DIR)


def table(report: dict[str, Any]) -> str:
    lines = [
        "| fault | sent | answered | refused (503 + Retry-After) | late (504) | lost | 500 "
        "| P95 before / during / after (ms) | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fault in report["faults"]:
        windows = [fault[name] for name in ("before", "during", "after")]
        sent, answered, refused, late, lost, errors = (
            sum(w[key] for w in windows) for key in ("sent", "answered", "refused", "late", "lost", "answers_500")
        )
        p95 = " / ".join("-" if w["p95_ms"] is None else f"{w['p95_ms']:.0f}" for w in windows)
        details = ", ".join(f"{key} {value}" for key, value in fault["details"].items())
        row = f"| {fault['fault']} | {sent} | {answered} | {refused} | {late} | {lost} | {errors} | {p95} | {details} |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=12.0, help="frames/s through HAProxy")
    parser.add_argument("--window", type=float, default=15.0, help="seconds before and after each fault")
    parser.add_argument("--freeze", type=float, default=5.0, help="seconds the queue Redis is frozen")
    parser.add_argument("--job-frames", type=int, default=300, help="frames of the batch job a worker dies in")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"some of {','.join(FAULTS)}, in order")
    parser.add_argument("--out", type=Path, default=Path("bench/results/rehearsal.json"))
    parser.add_argument(
        "--workdir", type=Path, help="keep the processes' logs and data here (default: a temporary one)"
    )
    args = parser.parse_args()
    faults = tuple(args.faults.split(","))
    if unknown := set(faults) - set(FAULTS):
        parser.error(f"unknown faults: {sorted(unknown)}")
    plan = Plan(
        rate=args.rate,
        window_seconds=args.window,
        faults=faults,
        freeze_seconds=args.freeze,
        job_frames=args.job_frames,
    )
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = {**machine(), **run_rehearsal(Stack(args.workdir, MODEL_CACHE), plan)}
    else:
        with tempfile.TemporaryDirectory(prefix="rehearsal-") as workdir:
            report = {**machine(), **run_rehearsal(Stack(Path(workdir), MODEL_CACHE), plan)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(json.dumps(report["goals"], indent=2))
    if not all(report["goals"].values()):
        raise SystemExit("rehearsal: a goal failed (see above and the report)")


if __name__ == "__main__":
    main()
