"""Benchmark: one replication monitoring pass over 50 nodes, and memory over many passes.

Starts a lab with the replicated servers only (PostgreSQL, MariaDB and Redis, each a primary and
a replica; no Prefect, no object stores), builds 50 nodes by repeating those six under distinct
cluster names, then runs `check_nodes` `--passes` times. Reports our process's RSS and the memory
Python allocated (tracemalloc) after pass 1, every 1,000th pass and the last, as they happen, so a
long run shows its trend; then the time per pass (median, 95th percentile, max), the lines whose
allocations grew most from pass 1,000 (a tenth of a shorter run) to the last, and a verdict line:
memory FLAT or GROWING. Target from issue 5: under 2 s per pass, memory flat over 10,000 passes.

Usage: .venv/bin/python benchmarks/replication_pass.py --nodes 50 --passes 10000
"""

from __future__ import annotations

import argparse
import gc
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
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
                role,
                PostgresTarget(host=pg.host, port=pg.port, user=pg.superuser, dbname="postgres"),
            )
        )
        maria = state.mariadb(role)
        nodes.append(
            ReplicationNode(
                f"my-{copy}",
                f"my-{role}",
                role,
                MySQLTarget(host=maria.host, port=maria.port, user=maria.admin_user),
            )
        )
        redis = state.redis(role)
        nodes.append(
            ReplicationNode(
                f"rd-{copy}",
                f"rd-{role}",
                role,
                RedisTarget(host=redis.host, port=redis.port, password=redis.password),
            )
        )
    return nodes


#: RSS (and traced memory) is reported after the first pass and every this many passes.
CHECKPOINT_EVERY = 1_000
#: The verdict's limits from the early checkpoint to the end: growth of the memory Python
#: allocates (tracemalloc) and of the RSS (allocator arenas of the check threads included).
FLAT_TRACED_BYTES = 1 * MIB
FLAT_RSS_BYTES = 8 * MIB


@dataclass(frozen=True)
class Checkpoint:
    """Memory after a pass: RSS, what Python allocated (traced), tracemalloc's own bookkeeping."""

    passes: int
    rss: int
    traced: int
    bookkeeping: int

    @property
    def rss_net(self) -> int:
        """RSS without tracemalloc's own memory (which grows with the traces it keeps)."""
        return self.rss - self.bookkeeping


def early_checkpoint(passes: int) -> int:
    """Where the "first" tracemalloc snapshot is taken: pass 1,000, or a tenth of a short run."""
    return min(1_000, max(1, passes // 10))


def own_code_excluded(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """The snapshot without this benchmark's own allocations (its list of pass times grows by
    design) and tracemalloc's."""
    return snapshot.filter_traces(
        [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    )


def measure(
    nodes: list[ReplicationNode], passes: int, trace: bool
) -> tuple[list[float], dict[str, int], list[Checkpoint], list[tracemalloc.StatisticDiff]]:
    """Run the passes: seconds per pass, first pass statuses, memory checkpoints, top growth."""
    thresholds = Thresholds()
    me = psutil.Process()
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    early = early_checkpoint(passes)
    wanted = {1, early, passes} | set(range(CHECKPOINT_EVERY, passes + 1, CHECKPOINT_EVERY))
    started = time.monotonic()
    checkpoints: list[Checkpoint] = []
    first: tracemalloc.Snapshot | None = None
    growth: list[tracemalloc.StatisticDiff] = []
    if trace:
        tracemalloc.start(1)  # one frame: "lineno" statistics, a third of the slowdown of 8
    try:
        for n in range(1, passes + 1):
            t0 = time.perf_counter()
            records = check_nodes(nodes, thresholds, timeout=5.0)
            seconds.append(time.perf_counter() - t0)
            if n == 1:
                for record in records:
                    statuses[record.status] = statuses.get(record.status, 0) + 1
            del records
            if n in wanted:
                gc.collect()
                traced = tracemalloc.get_traced_memory()[0] if trace else 0
                own = tracemalloc.get_tracemalloc_memory() if trace else 0
                checkpoints.append(Checkpoint(n, me.memory_info().rss, traced, own))
                elapsed = time.monotonic() - started
                print(checkpoint_line(checkpoints[-1], trace, elapsed), flush=True)
                if trace and n == early:
                    first = own_code_excluded(tracemalloc.take_snapshot())
                if trace and n == passes and first is not None:
                    last = own_code_excluded(tracemalloc.take_snapshot())
                    growth = last.compare_to(first, "lineno")
    finally:
        if trace:
            tracemalloc.stop()
    return seconds, statuses, checkpoints, growth


def checkpoint_line(point: Checkpoint, trace: bool, elapsed: float) -> str:
    traced = (
        f" (net of tracemalloc {point.rss_net / MIB:.1f}), traced {point.traced / MIB:.2f} MiB"
        if trace
        else ""
    )
    rss = point.rss / MIB
    return f"after pass {point.passes:>6,} ({elapsed:6.0f} s): RSS {rss:.1f} MiB{traced}"


def report(
    nodes: int,
    passes: int,
    seconds: list[float],
    statuses: dict[str, int],
    checkpoints: list[Checkpoint],
    growth: list[tracemalloc.StatisticDiff],
    trace: bool,
) -> None:
    ordered = sorted(seconds)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(f"{nodes} nodes, {passes} passes; first pass statuses: {statuses}")
    traced_note = " (tracemalloc on: slower than without)" if trace else ""
    print(
        f"seconds per pass: median {statistics.median(seconds):.3f}, p95 {p95:.3f}, "
        f"max {max(seconds):.3f} (target < 2 s){traced_note}"
    )
    if trace and growth:
        print(f"tracemalloc top growth, pass {early_checkpoint(passes):,} -> pass {passes:,}:")
        for stat in sorted(growth, key=lambda s: s.size_diff, reverse=True)[:10]:
            frame = stat.traceback[0]
            print(
                f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  "
                f"{frame.filename}:{frame.lineno}"
            )
    print(verdict(passes, checkpoints, growth if trace else None))


def verdict(
    passes: int, checkpoints: list[Checkpoint], growth: list[tracemalloc.StatisticDiff] | None
) -> str:
    """FLAT if memory grew less than the limits between the early checkpoint and the end:
    the RSS, and (traced) what the checks allocated and kept, the benchmark's own list aside."""
    early = next(p for p in checkpoints if p.passes == early_checkpoint(passes))
    end = checkpoints[-1]
    rss = end.rss_net - early.rss_net
    trace = growth is not None
    traced = sum(stat.size_diff for stat in growth or [])
    flat = rss < FLAT_RSS_BYTES and traced < FLAT_TRACED_BYTES
    word = "FLAT" if flat else "GROWING"
    detail = f"RSS {rss / MIB:+.1f} MiB (limit {FLAT_RSS_BYTES / MIB:.0f}"
    detail += ", net of tracemalloc)" if trace else ")"
    if trace:
        detail += f", traced {traced / MIB:+.2f} MiB (limit {FLAT_TRACED_BYTES / MIB:.0f})"
    return f"verdict: memory {word} from pass {early.passes:,} to pass {end.passes:,}: {detail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--passes", type=int, default=1000)
    parser.add_argument(
        "--trace",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tracemalloc snapshots (default on; --no-trace for undisturbed timings)",
    )
    args = parser.parse_args()
    if args.passes < 1 or args.nodes < 1:
        parser.error("--nodes and --passes must be at least 1")
    # A long run stopped with kill (SIGTERM) still takes its lab down (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
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
        results = measure(nodes, args.passes, args.trace)
    finally:
        lab.down()
    report(len(nodes), args.passes, *results, trace=args.trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
