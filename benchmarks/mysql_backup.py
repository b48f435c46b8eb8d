"""Benchmark: our MariaDB backup next to ``mariadb-dump | zstd -3 | age`` on a lab database.

One run starts (or reuses) its own lab in ``--dir`` with a MariaDB 10.11 primary only, seeds the
``siprec`` database to each size of ``--sizes`` in turn (the seed stays for the next run with
``--keep``), and at each size measures, alternating the two sides, ``--repeat`` times:

* ours:  ``run_backup`` (mariadb-dump -> sha256 -> zstd -> AES-256-GCM -> LocalStore, plus the
  snapshot row counts) in a child Python process;
* shell: ``bash -o pipefail -c 'mariadb-dump <the same options> | zstd -3 | age -r KEY > file'``.

Throughput is dump MiB (the manifest's plaintext bytes, the same dump on both sides) per second
of wall time. Peak RSS is sampled with psutil every 50 ms over the whole process tree of each
side; for ours it is split into our Python process and the mariadb-dump it runs, and the child's
own VmHWM is reported too. The targets: ours >= 0.9x the shell's throughput, our peak RSS < 150
MiB, and no higher at the larger size.

Then, at each size, the restore of each side's newest backup into a fresh database, alternating
``--repeat`` times: ours ``run_restore`` (the ``mariadb`` client, then the row counts) in a child
process, the shell ``age -d | zstd -d | mariadb <the flags MySQLRestore uses>`` under GNU time;
a table, PASS / MISS verdicts and the JSON in ``benchmarks/results/mariadb-<time>.json``
(benchmarks/README.md, issue 4).

Each size has its own database ``siprec_bench_<MiB>``, so a later run with ``--keep`` reuses the
seed of every size.

Usage: .venv/bin/python benchmarks/mysql_backup.py --sizes 256,1024 --repeat 3 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

from backup_restore import (  # noqa: E402 - benchmarks/ on the path
    BenchError,
    RssSampler,
    Run,
    _status_mib,
    alternate,
    log,
    measured,
    ours_run,
    print_checks,
    run_command,
    shell_run,
    stop_on_sigterm,
    summarize,
    table,
    verdicts,
    wrap_tools,
    write_results,
)
from backup_restore import run_sampled as measure  # noqa: E402

DEFAULT_DIR = Path("/var/tmp/siprec-bench-mariadb-lab")
MIB = 1 << 20
MIN_THROUGHPUT_RATIO = 0.9
MAX_RSS_MIB = 150.0
CLUSTER = "bench"
SOURCE_NAME = "m"


# --- the child process: one run of our engine -------------------------------------------------


def child_main() -> None:
    """Run ``run_backup`` once; parameters (with the password) as JSON on stdin."""
    from siprec_backup.backup import run_backup
    from siprec_backup.sources.mysql import MySQLSource, MySQLTarget
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey

    p = json.load(sys.stdin)
    target = MySQLTarget(
        host=p["host"],
        port=p["port"],
        user=p["user"],
        password=p["password"],
        databases=(p["database"],),
    )
    key = MasterKey(p["key_id"], bytes.fromhex(p["key_hex"]))
    store = LocalStore(p["store"])
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        manifest = run_backup(
            MySQLSource(target), store, key, cluster=CLUSTER, source_name=SOURCE_NAME
        )
        seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "dump_bytes": manifest.object.plaintext_bytes,
                "stored_bytes": manifest.object.ciphertext_bytes,
                "vmhwm_mib": _status_mib("VmHWM"),
                "tables": manifest.tables,
                **sampler.report(),
            }
        )
    )


def child_restore_main() -> None:
    """Run ``run_restore`` of the newest backup in the store once into a fresh database;
    parameters (with the password) as JSON on stdin. The row count it ends with is timed apart
    by wrapping ``MySQLTarget.restored_counts``."""
    from siprec_backup.catalog import find_backup
    from siprec_backup.restore import run_restore
    from siprec_backup.sources.mysql import MySQLTarget
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey

    p = json.load(sys.stdin)
    target = MySQLTarget(
        host=p["host"],
        port=p["port"],
        user=p["user"],
        password=p["password"],
        databases=(p["source_db"],),
        database=p["database"],
        bin_dir=Path(p["bin_dir"]),  # the mariadb client under GNU time (wrap_tools)
    )
    key = MasterKey(p["key_id"], bytes.fromhex(p["key_hex"]))
    store = LocalStore(p["store"])
    manifest = find_backup(store, "", CLUSTER, SOURCE_NAME)
    count_seconds: list[float] = []
    count_rows = MySQLTarget.restored_counts

    def timed_count(self: MySQLTarget, tables: dict[str, int]) -> dict[str, int]:
        c0 = time.perf_counter()
        try:
            return count_rows(self, tables)
        finally:
            count_seconds.append(time.perf_counter() - c0)

    MySQLTarget.restored_counts = timed_count  # type: ignore[method-assign]
    result, report = measured(p, lambda: run_restore(store, manifest, key, target))
    print(
        json.dumps(
            {
                "count_seconds": sum(count_seconds),
                "dump_bytes": result.plaintext_bytes,
                "tables": result.tables,
                **report,
            }
        )
    )


# --- the parent -------------------------------------------------------------------------------


class Restores:
    """The restore step at one size: each side restores its own newest backup (``ours`` in
    ``store``, the shell's in ``shell_file``) into a fresh database of the lab MariaDB."""

    def __init__(self, ep: Any, work: Path, key: Any, identity: Path) -> None:
        self.ep, self.work, self.key, self.identity = ep, work, key, identity
        self.store = work / "ours"
        self.shell_file = work / "shell.sql.zst.age"
        self.tool_time_file = work / "mariadb.time"
        client = ep.target().tool("mariadb", "mysql")
        self.client = client
        self.bin_dir = wrap_tools(work / "bin", {"mariadb": client}, self.tool_time_file)
        self.source_db = ""
        self.source_rows: dict[str, int] = {}

    def admin(self, statement: str) -> None:
        with self.ep.connect(admin=True) as conn, conn.cursor() as cur:
            cur.execute(statement)

    def settle(self) -> None:
        """Same start for every run: the last run's files written back. (InnoDB's own dirty
        pages are left to it: MariaDB 10.11 does not flush them on demand, and a dropped
        database's pages are discarded, not written.)"""
        os.sync()

    def check_rows(self, db: str) -> None:
        """The restored database holds the seeded rows (a sanity check, not timed)."""
        from siprec_backup.lab.mariadb import mariadb_row_counts

        want = {k.split(".", 1)[1]: v for k, v in self.source_rows.items()}
        got = {k.split(".", 1)[1]: v for k, v in mariadb_row_counts(self.ep, db).items()}
        if got != want:
            raise BenchError(f"restore into {db}: rows {got} differ from the seed's {want}")

    def ours(self, n: int) -> Run:
        db = "siprec_restore_ours"
        self.admin(f"DROP DATABASE IF EXISTS `{db}`")
        params = {
            "host": self.ep.host,
            "port": self.ep.port,
            "user": self.ep.user,
            "password": self.ep.password,
            "source_db": self.source_db,
            "database": db,
            "bin_dir": str(self.bin_dir),
            "store": str(self.store),
            "key_id": self.key.key_id,
            "key_hex": self.key.material.hex(),
            "tool_time_file": str(self.tool_time_file),
        }
        self.tool_time_file.unlink(missing_ok=True)
        try:
            wall, out = run_command(
                [sys.executable, __file__, "--child-restore"],
                what="our restore",
                stdin=json.dumps(params).encode(),
            )
            self.check_rows(db)
        finally:
            self.admin(f"DROP DATABASE IF EXISTS `{db}`")
        r = json.loads(out)
        r["child_wall_seconds"] = wall
        return ours_run(r, count_seconds=r["count_seconds"])

    def shell(self, n: int) -> Run:
        db = "siprec_restore_shell"
        self.admin(f"DROP DATABASE IF EXISTS `{db}`")
        self.admin(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        target = self.ep.target()
        try:
            with target.options_file() as options:
                client = [self.client, *target.client_args(options), "--batch", "--silent"]
                pipeline = (
                    f"age -d -i {shlex.quote(str(self.identity))} "
                    f"{shlex.quote(str(self.shell_file))} | zstd -d -q -c | "
                    f"{shlex.join(client)} --database={db}"
                )
                run = shell_run(pipeline, "shell restore", self.work / "shell.time")
            self.check_rows(db)
        finally:
            self.admin(f"DROP DATABASE IF EXISTS `{db}`")
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,1024", help="MiB sizes to seed, ascending")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--keep", action="store_true", help="leave the lab and its seed running")
    opts = parser.parse_args(argv)

    from siprec_backup.lab import Lab, fill_mariadb
    from siprec_backup.lab.mariadb import MariaDBPrimary, create_schema
    from siprec_backup.sources.mysql import dump_flags, tool_version
    from siprec_backup.stream import MasterKey

    stop_on_sigterm()
    started = datetime.now(UTC)
    lab = Lab(opts.dir, services=[MariaDBPrimary()])
    key = MasterKey.generate("bench")
    work = Path(tempfile.mkdtemp(prefix="siprec-mysql-bench-", dir="/var/tmp"))
    results: list[dict[str, Any]] = []
    restore_summaries: list[dict[str, Any]] = []
    restore_runs: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()
    print(f"load average before: {load_before}")
    try:
        state = lab.up(prefect=False)
        ep = state.mariadb()
        target = ep.target()
        identity = work / "age.key"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        dump_tool = target.tool("mariadb-dump", "mysqldump")
        flags = dump_flags(tool_version(dump_tool))
        restores = Restores(ep, work, key, identity)
        for size in [int(s) for s in opts.sizes.split(",")]:
            t0 = time.monotonic()
            db = f"siprec_bench_{size}"  # one database per size: kept and reused with --keep
            with ep.connect() as conn, conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
            create_schema(ep, db)
            stats = fill_mariadb(ep, size, database=db)
            log(f"seeded to {stats.mb:.0f} MiB in {time.monotonic() - t0:.0f} s")
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "shell": []}
            for i in range(opts.repeat):
                order = ["ours", "shell"] if i % 2 == 0 else ["shell", "ours"]
                for side in order:
                    if side == "ours":
                        store = restores.store  # the newest backup stays for the restore step
                        subprocess.run(["rm", "-rf", str(store)], check=True)
                        store.mkdir()
                        params = {
                            "host": ep.host,
                            "port": ep.port,
                            "user": ep.user,
                            "password": ep.password,
                            "database": db,
                            "store": str(store),
                            "key_id": key.key_id,
                            "key_hex": key.material.hex(),
                        }
                        wall, out, tree = measure(
                            [sys.executable, __file__, "--child"], json.dumps(params).encode()
                        )
                        child = json.loads(out)
                        run = {
                            "seconds": child["seconds"],
                            "wall": wall,
                            "dump_bytes": child["dump_bytes"],
                            "python_rss": tree.peak_by_name.get("python", 0.0)
                            or max(
                                (v for k, v in tree.peak_by_name.items() if "python" in k),
                                default=0.0,
                            ),
                            "vmhwm": child["vmhwm_mib"],
                            "dump_rss": tree.peak_by_name.get("mariadb-dump", 0.0),
                            "tree_rss": tree.peak_total,
                            "halves": (child["rss_first_half_mib"], child["rss_second_half_mib"]),
                        }
                    else:
                        with target.options_file() as options:
                            cmd = " ".join(
                                shlex.quote(a)
                                for a in [dump_tool, *target.client_args(options), *flags]
                            )
                            out_file = shlex.quote(str(restores.shell_file))
                            pipeline = (
                                f"{cmd} {shlex.quote(db)} | zstd -3 -q | "
                                f"age -r {shlex.quote(recipient)} > {out_file}"
                            )
                            wall, _out, tree = measure(["bash", "-o", "pipefail", "-c", pipeline])
                        run = {
                            "seconds": wall,
                            "tree_rss": tree.peak_total,
                            "max_rss": max(tree.peak_by_name.values(), default=0.0),
                        }
                    runs[side].append(run)
                    log(f"{size} MiB {side}: {run['seconds']:.2f} s")
            dump_bytes = runs["ours"][0]["dump_bytes"]
            summary = {
                "size_mib": round(stats.mb),
                "dump_mib": dump_bytes / MIB,
                "ours_s": statistics.median(r["seconds"] for r in runs["ours"]),
                "shell_s": statistics.median(r["seconds"] for r in runs["shell"]),
                "ours_python_rss": max(r["python_rss"] for r in runs["ours"]),
                "ours_vmhwm": max(r["vmhwm"] for r in runs["ours"]),
                "ours_dump_rss": max(r["dump_rss"] for r in runs["ours"]),
                "ours_tree_rss": max(r["tree_rss"] for r in runs["ours"]),
                "shell_tree_rss": max(r["tree_rss"] for r in runs["shell"]),
                "shell_max_rss": max(r["max_rss"] for r in runs["shell"]),
                "halves": [r["halves"] for r in runs["ours"]],
            }
            summary["ours_mbs"] = summary["dump_mib"] / summary["ours_s"]
            summary["shell_mbs"] = summary["dump_mib"] / summary["shell_s"]
            summary["ratio"] = summary["ours_mbs"] / summary["shell_mbs"]
            results.append(summary)
            # Restore: each side its own newest backup of this same database state.
            restores.source_db, restores.source_rows = db, stats.rows
            step = f"restore {round(stats.mb)} MiB"
            r = alternate(step, restores.ours, restores.shell, opts.repeat, restores.settle)
            restore_runs[step] = [asdict(x) for x in r]
            restore_summaries.append({**summarize(step, stats.bytes, r), "tool": "mariadb"})
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        if not opts.keep:
            lab.down()
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    print("\nbackup")
    print(
        f"{'DB MiB':>7} {'dump MiB':>8} {'ours MB/s':>9} {'shell MB/s':>10} {'ratio':>5} "
        f"{'ours py RSS':>11} {'(VmHWM)':>7} {'+dump':>6} {'tree':>6} {'shell tree':>10}"
    )
    for s in results:
        print(
            f"{s['size_mib']:>7} {s['dump_mib']:>8.0f} {s['ours_mbs']:>9.1f} "
            f"{s['shell_mbs']:>10.1f} {s['ratio']:>5.2f} {s['ours_python_rss']:>11.1f} "
            f"{s['ours_vmhwm']:>7.1f} {s['ours_dump_rss']:>6.1f} {s['ours_tree_rss']:>6.1f} "
            f"{s['shell_tree_rss']:>10.1f}"
        )
    ok = True
    for s in results:
        for name, passed in (
            (f"{s['size_mib']} MiB: ours/shell {s['ratio']:.2f} >= 0.9", s["ratio"] >= 0.9),
            (
                f"{s['size_mib']} MiB: our peak RSS {s['ours_vmhwm']:.1f} MiB < 150",
                s["ours_vmhwm"] < MAX_RSS_MIB,
            ),
        ):
            ok &= passed
            print(f"  {'PASS' if passed else 'MISS'}  {name}")
    if len(results) > 1:
        small, large = results[0]["ours_vmhwm"], results[-1]["ours_vmhwm"]
        flat = large <= small + 2.0
        ok &= flat
        print(
            f"  {'PASS' if flat else 'MISS'}  RSS flat: {small:.1f} -> {large:.1f} MiB (+2 noise)"
        )
    print("\nrestore (age -d | zstd -d | mariadb, each side its own backup)")
    report = table(restore_summaries, sizes=("DB MB", "dump MB"))
    print(report)
    checks = verdicts(restore_summaries, flat="restore")
    ok &= print_checks(checks)
    results_file = write_results(
        "mariadb",
        started,
        {
            "started_at": started.isoformat(timespec="seconds"),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
            "cpus": os.cpu_count(),
            "load_average": {"before": load_before, "after": load_after},
            "backup": results,
            "restore": restore_summaries,
            "restore_targets": [{"target": t, "met": met} for t, met in checks],
            "restore_runs": restore_runs,
            "restore_table": report,
        },
    )
    print(f"results: {results_file}")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main()
    elif sys.argv[1:] == ["--child-restore"]:
        child_restore_main()
    else:
        sys.exit(main())
