"""Benchmark: one replication monitoring pass over 50 nodes, and memory over many passes.

Starts a lab with the replicated servers only (PostgreSQL, MariaDB and Redis, each a primary and
a replica; no Prefect, no object stores), builds 50 nodes by repeating those six under distinct
cluster names, then runs `check_nodes` `--passes` times and reports the time per pass (median,
95th percentile, max) and our process's RSS after the first pass and after the last, so that
memory growing with uptime would show. Target from issue 5: under 2 s per pass, RSS flat.

Usage: .venv/bin/python benchmarks/replication_pass.py --nodes 50 --passes 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from siprec_backup.lab import Lab, LabState  # noqa: E402
from siprec_backup.lab.lab import SERVICES  # noqa: E402
from siprec_backup.replication import ReplicationNode, Thresholds, check_nodes  # noqa: E402
from siprec_backup.sources.mysql import MySQLTarget  # noqa: E402
from siprec_backup.sources.postgres import PostgresTarget  # noqa: E402
from siprec_backup.sources.redis import RedisTarget  # noqa: E402

GROUPS = ("postgres", "mariadb", "redis")
MIB = 1 << 20


def lab_nodes(state: LabState, copy: int) -> list[ReplicationNode]:
    """The lab's six replicated servers as the nodes of three clusters named after `copy`."""
    nodes = []
    for role in ("primary", "replica"):
        pg = state.postgres(role)
        name = "replica1" if role == "replica" else "pg-primary"
        nodes.append(
            ReplicationNode(
                f"pg-{copy}",
                name,
                role,  # type: ignore[arg-type]
                PostgresTarget(host=pg.host, port=pg.port, user=pg.superuser, dbname="postgres"),
            )
        )
        maria = state.mariadb(role)
        nodes.append(
            ReplicationNode(
                f"my-{copy}",
                f"my-{role}",
                role,  # type: ignore[arg-type]
                MySQLTarget(host=maria.host, port=maria.port, user=maria.admin_user),
            )
        )
        redis = state.redis(role)
        nodes.append(
            ReplicationNode(
                f"rd-{copy}",
                f"rd-{role}",
                role,  # type: ignore[arg-type]
                RedisTarget(host=redis.host, port=redis.port, password=redis.password),
            )
        )
    return nodes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--passes", type=int, default=1000)
    args = parser.parse_args()
    lab = Lab(
        Path(tempfile.mkdtemp(prefix="siprec-bench-repl-")),
        services=[s for s in SERVICES if s.group in GROUPS],
    )
    state = lab.up(prefect=False)
    try:
        nodes: list[ReplicationNode] = []
        copy = 0
        while len(nodes) < args.nodes:
            nodes += lab_nodes(state, copy)
            copy += 1
        nodes = nodes[: args.nodes]
        thresholds = Thresholds()
        me = psutil.Process()
        seconds: list[float] = []
        rss_first = 0
        statuses: dict[str, int] = {}
        for n in range(args.passes):
            t0 = time.perf_counter()
            records = check_nodes(nodes, thresholds, timeout=5.0)
            seconds.append(time.perf_counter() - t0)
            if n == 0:
                rss_first = me.memory_info().rss
                for record in records:
                    statuses[record.status] = statuses.get(record.status, 0) + 1
        rss_last = me.memory_info().rss
    finally:
        lab.down()
    ordered = sorted(seconds)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(f"{len(nodes)} nodes, {args.passes} passes; first pass statuses: {statuses}")
    print(
        f"seconds per pass: median {statistics.median(seconds):.3f}, p95 {p95:.3f}, "
        f"max {max(seconds):.3f} (target < 2 s)"
    )
    print(
        f"RSS after pass 1: {rss_first / MIB:.1f} MiB, after pass {args.passes}: "
        f"{rss_last / MIB:.1f} MiB ({(rss_last - rss_first) / MIB:+.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
