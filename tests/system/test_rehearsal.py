"""The multi-host failure rehearsal, short form (`make rehearsal` runs the long one, docs/RUNBOOK.md): the split
deployment on hosts of its own (network namespaces: HAProxy, two remote-mode API replicas, two workers, a Redis
Cluster of 3 masters with a replica each, a queue Redis, a shared upload endpoint) under frames through HAProxy,
while a worker dies in a batch job, then the cluster master of a session. What is asserted is behaviour, not
milliseconds: nothing accepted is lost, no answer is a 500, every refusal is a 503 or 429 with Retry-After, the
killed worker's job completes, every answered frame is in its session; and nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.rehearsal import Plan, Stack, run_rehearsal

SHORT = Plan(rate=8, sessions=2, window_seconds=2, faults=("worker", "master"), job_frames=24, restore=False)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI and `make test` are)")


def test_a_worker_and_a_cluster_master_die_under_load_and_nothing_accepted_is_lost(
    tmp_path: Path, model_cache: Path
) -> None:
    stack = Stack(tmp_path, model_cache)
    report = run_rehearsal(stack, SHORT)
    assert stack.network.leftovers() == []  # torn down: no namespace, no link
    assert all(process.poll() is not None for process in stack.processes.values())
    total = report["total"]
    assert total["answered"] > 0, total
    assert total["lost"] == 0, report
    assert total["answers_500"] == 0, report
    assert total["refused_without_retry_after"] == 0, report
    worker, master = report["faults"]
    assert worker["details"]["job_status"] == "completed", worker
    assert worker["details"]["job_done"] == SHORT.job_frames, worker
    assert master["details"]["killed_node"] not in ("r1",), master  # the seed node stays (see _master_to_kill)
    assert report["sessions"]["answered"] == report["sessions"]["recorded"], report["sessions"]
    assert master["after"]["answered"] > 0, master  # the session on the replica that took over is served again
