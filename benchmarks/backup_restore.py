"""Benchmark: our backup and restore next to ``pg_dump -Fc -Z0 | zstd -3 | age`` on one lab database.

One run starts its own lab (a PostgreSQL 15 primary, no replica, no Prefect), seeds it to
``--scale`` MiB, then measures, alternating the two sides and repeating each measurement:

* backup, ours:   ``run_backup`` (pg_dump -> sha256 -> zstd -> AES-256-GCM -> LocalStore) in a
  child Python process, so its peak RSS is our process alone (pg_dump, its child, is reported
  apart);
* backup, shell:  ``bash -o pipefail -c 'pg_dump -Fc -Z0 | zstd -3 | age -r KEY > file'``;
* restore, ours:  ``run_restore`` into a fresh database (includes the row count check);
* restore, shell: ``age -d | zstd -d | pg_restore`` with the same pg_restore flags.

With ``--rss-scale`` the database is then grown to that size and both backups run again, to show
that our peak memory does not grow with the database. The table goes to stdout, everything
measured to ``benchmarks/results/<timestamp>.json``. See benchmarks/README.md.

Usage: .venv/bin/python benchmarks/backup_restore.py --scale 1024 --rss-scale 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DIR = Path("/var/tmp/siprec-bench-lab")
MIB = 1 << 20
#: The issue's targets.
MIN_THROUGHPUT_RATIO = 0.9
MAX_RSS_MIB = 150.0
#: "No higher at 4x": RSS readings of identical runs differ by a few hundred KiB.
RSS_TOLERANCE_MIB = 2.0
#: The flags our restore gives pg_restore (siprec_backup.sources.postgres.PostgresRestore).
PG_RESTORE_FLAGS = ["--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error"]
CLUSTER = "bench"
SOURCE_NAME = "siprec"


# --- the child process: one run of our engine -------------------------------------------------


def _target_from(params: dict[str, Any]) -> Any:
    from siprec_backup.sources.postgres import PostgresTarget

    t = params["target"]
    return PostgresTarget(
        host=t["host"],
        port=t["port"],
        user=t["user"],
        dbname=t["dbname"],
        password=t["password"],
        bin_dir=Path(t["bin_dir"]),
    )


def _key_from(params: dict[str, Any]) -> Any:
    from siprec_backup.stream import MasterKey

    return MasterKey(params["key_id"], bytes.fromhex(params["key_hex"]))


def _usage() -> dict[str, float]:
    """Peak RSS (MiB) of this process and of its largest waited-for child (pg_dump/pg_restore)."""
    return {
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def child_backup(params: dict[str, Any]) -> dict[str, Any]:
    """Run ``run_backup`` once into a LocalStore; timing covers run_backup only (no imports)."""
    from siprec_backup.backup import run_backup
    from siprec_backup.manifest import MANIFEST_NAME, backup_prefix
    from siprec_backup.sources.postgres import PostgresSource
    from siprec_backup.storage import LocalStore

    target = _target_from(params)
    store = LocalStore(params["store"])
    rss_before = _usage()["rss_mib"]
    t0 = time.perf_counter()
    manifest = run_backup(
        PostgresSource(target), store, _key_from(params), cluster=CLUSTER, source_name=SOURCE_NAME
    )
    seconds = time.perf_counter() - t0
    base = backup_prefix("", manifest.cluster, manifest.source, manifest.backup_id)
    return {
        "seconds": seconds,
        "dump_bytes": manifest.object.plaintext_bytes,
        "stored_bytes": manifest.object.ciphertext_bytes,
        "manifest_key": base + MANIFEST_NAME,
        "tables": manifest.tables,
        "rss_before_run_mib": rss_before,
        **_usage(),
    }


def child_restore(params: dict[str, Any]) -> dict[str, Any]:
    """Run ``run_restore`` once; the row count it ends with is timed apart by wrapping it."""
    import siprec_backup.restore as restore_module
    from siprec_backup.manifest import Manifest
    from siprec_backup.storage import LocalStore

    store = LocalStore(params["store"])
    with store.open_reader(params["manifest_key"]) as f:
        manifest = Manifest.from_json(f.read(), where=params["manifest_key"])
    count_seconds: list[float] = []
    count_rows = restore_module.restored_row_counts

    def timed_count(target: Any) -> dict[str, int]:
        c0 = time.perf_counter()
        try:
            return count_rows(target)
        finally:
            count_seconds.append(time.perf_counter() - c0)

    restore_module.restored_row_counts = timed_count
    rss_before = _usage()["rss_mib"]
    t0 = time.perf_counter()
    result = restore_module.run_restore(store, manifest, _key_from(params), _target_from(params))
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "count_seconds": sum(count_seconds),
        "dump_bytes": result.plaintext_bytes,
        "tables": result.tables,
        "rss_before_run_mib": rss_before,
        **_usage(),
    }


def child_main(mode: str) -> None:
    """Entry point of the child: parameters (with secrets) as JSON on stdin, result on stdout."""
    params = json.load(sys.stdin)
    result = {"backup": child_backup, "restore": child_restore}[mode](params)
    print(json.dumps(result))


# --- the parent: lab, measurements, report ----------------------------------------------------


class BenchError(RuntimeError):
    """A measured command failed."""


@dataclass
class Run:
    """One measurement."""

    side: str  # "ours" or "shell"
    seconds: float
    rss_mib: float  # ours: our process; shell: the largest process of the pipeline
    tool_rss_mib: float | None = None  # ours: pg_dump / pg_restore
    dump_bytes: int = 0
    stored_bytes: int = 0
    count_seconds: float | None = None  # ours, restore: the row count check
    extra: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def run_measured(
    args: list[str], *, what: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> tuple[float, float, bytes]:
    """Run ``args`` to completion: (wall seconds, peak RSS MiB of it and its descendants, stdout).

    wait4() reports the largest ru_maxrss among the process and the descendants it waited for,
    which is the largest single process of a shell pipeline.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env)
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")
        out.seek(0)
        return seconds, usage.ru_maxrss / 1024, out.read()


class Bench:
    """The lab, the key material and the measurements of one benchmark run."""

    def __init__(self, root: Path, state: Any, work: Path) -> None:
        from siprec_backup.sources.postgres import PostgresTarget
        from siprec_backup.stream import MasterKey

        self.root = root
        self.state = state
        self.pg = state.postgres()
        self.work = work
        self.key = MasterKey.generate("bench")
        self.source = PostgresTarget(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            dbname=self.pg.dbname,
            password=self.pg.password,
            bin_dir=self.pg.bin_dir,
        )
        self.age_identity = work / "age-identity.txt"
        subprocess.run(
            ["age-keygen", "-o", str(self.age_identity)], check=True, capture_output=True
        )
        self.age_recipient = subprocess.run(
            ["age-keygen", "-y", str(self.age_identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.last_ours: dict[str, Any] | None = None  # the newest backup: what restores read
        self.last_shell: Path | None = None
        self.tables: dict[str, int] = {}

    # -- helpers -------------------------------------------------------------------------------

    def target(self, dbname: str | None = None) -> Any:
        from dataclasses import replace

        return replace(self.source, dbname=dbname or self.source.dbname)

    def params(self, **extra: Any) -> bytes:
        t = self.target(extra.pop("dbname", None))
        data = {
            "target": {
                "host": t.host,
                "port": t.port,
                "user": t.user,
                "dbname": t.dbname,
                "password": t.password,
                "bin_dir": str(t.bin_dir),
            },
            "key_id": self.key.key_id,
            "key_hex": self.key.material.hex(),
            **extra,
        }
        return json.dumps(data).encode()

    def admin(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        conninfo = self.pg.conninfo(superuser=True, dbname=dbname)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement.encode())

    def scratch(self, name: str) -> None:
        """A fresh, empty database ``name`` owned by the application role."""
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin(f'CREATE DATABASE "{name}" OWNER "{self.pg.user}"')

    def drop(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settle(self) -> None:
        """Same starting point for every measurement: no dirty buffers left by the last one."""
        self.admin("CHECKPOINT")

    def database_bytes(self) -> int:
        import psycopg

        with psycopg.connect(self.pg.conninfo(superuser=True)) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def fill(self, target_mb: int) -> None:
        """Grow the siprec schema to about ``target_mb`` MiB, then VACUUM: hint bits set and the
        data read once, so the first measured dump does not pay for what the seeding left."""
        from siprec_backup.lab import fill

        t0 = time.perf_counter()
        last = [0.0]

        def progress(size: int) -> None:
            if time.perf_counter() - last[0] > 15:
                last[0] = time.perf_counter()
                log(f"  seeding: {size / MIB:.0f} MiB")

        stats = fill(self.pg.conninfo(), target_mb, progress=progress)
        log(f"seeded to {stats.mb:.0f} MiB in {time.perf_counter() - t0:.0f} s; VACUUM ANALYZE")
        self.admin("VACUUM (ANALYZE)", dbname=self.pg.dbname)
        self.settle()

    def shell_env(self) -> dict[str, str]:
        env: dict[str, str] = self.source.client_env()  # PGPASSWORD, as our engine passes it
        return env

    # -- measurements --------------------------------------------------------------------------

    def backup_ours(self, n: int) -> Run:
        store = self.work / f"ours-{n}"
        seconds_wall, _, out = run_measured(
            [sys.executable, str(Path(__file__).resolve()), "--child", "backup"],
            what="our backup",
            stdin=self.params(store=str(store)),
        )
        r = json.loads(out)
        self._replace_last_ours({"store": str(store), "manifest_key": r["manifest_key"]})
        self.tables = r["tables"]
        return Run(
            side="ours",
            seconds=r["seconds"],
            rss_mib=r["rss_mib"],
            tool_rss_mib=r["children_rss_mib"],
            dump_bytes=r["dump_bytes"],
            stored_bytes=r["stored_bytes"],
            extra={"child_wall_seconds": seconds_wall, "rss_before_run_mib": r["rss_before_run_mib"]},
        )

    def backup_shell(self, n: int) -> Run:
        out_file = self.work / f"shell-{n}.zst.age"
        pg_dump = self.source.tool("pg_dump")
        dump = [pg_dump, *self.source.client_args(), "--format=custom", "--compress=0"]
        pipeline = (
            f"{shlex.join(dump)} | zstd -3 -q -c | "
            f"age -r {shlex.quote(self.age_recipient)} > {shlex.quote(str(out_file))}"
        )
        seconds, rss, _ = run_measured(
            ["bash", "-o", "pipefail", "-c", pipeline], what="shell backup", env=self.shell_env()
        )
        if self.last_shell is not None:
            self.last_shell.unlink(missing_ok=True)
        self.last_shell = out_file
        return Run(side="shell", seconds=seconds, rss_mib=rss, stored_bytes=out_file.stat().st_size)

    def restore_ours(self, n: int) -> Run:
        assert self.last_ours is not None
        dbname = "bench_restore_ours"
        self.scratch(dbname)
        try:
            seconds_wall, _, out = run_measured(
                [sys.executable, str(Path(__file__).resolve()), "--child", "restore"],
                what="our restore",
                stdin=self.params(dbname=dbname, **self.last_ours),
            )
        finally:
            self.drop(dbname)
        r = json.loads(out)
        return Run(
            side="ours",
            seconds=r["seconds"],
            rss_mib=r["rss_mib"],
            tool_rss_mib=r["children_rss_mib"],
            dump_bytes=r["dump_bytes"],
            count_seconds=r["count_seconds"],
            extra={"child_wall_seconds": seconds_wall, "rss_before_run_mib": r["rss_before_run_mib"]},
        )

    def restore_shell(self, n: int) -> Run:
        assert self.last_shell is not None
        from siprec_backup.lab import row_counts

        dbname = "bench_restore_shell"
        self.scratch(dbname)
        try:
            restore = [
                self.source.tool("pg_restore"),
                *self.target(dbname).client_args(),
                *PG_RESTORE_FLAGS,
            ]
            pipeline = (
                f"age -d -i {shlex.quote(str(self.age_identity))} "
                f"{shlex.quote(str(self.last_shell))} | zstd -d -q -c | {shlex.join(restore)}"
            )
            seconds, rss, _ = run_measured(
                ["bash", "-o", "pipefail", "-c", pipeline],
                what="shell restore",
                env=self.shell_env(),
            )
            restored = {f"siprec.{t}": c for t, c in row_counts(self.pg.conninfo(dbname=dbname)).items()}
        finally:
            self.drop(dbname)
        if self.tables and restored != self.tables:  # a sanity check, not timed
            raise BenchError(f"shell restore: row counts {restored} differ from {self.tables}")
        return Run(side="shell", seconds=seconds, rss_mib=rss)

    def _replace_last_ours(self, new: dict[str, Any]) -> None:
        if self.last_ours is not None:
            shutil.rmtree(self.last_ours["store"], ignore_errors=True)
        self.last_ours = new

    def alternate(
        self, step: str, ours: Callable[[int], Run], shell: Callable[[int], Run], repeat: int
    ) -> list[Run]:
        """``repeat`` rounds of both sides; the side that goes first alternates every round."""
        runs: list[Run] = []
        for n in range(repeat):
            order = [ours, shell] if n % 2 == 0 else [shell, ours]
            for fn in order:
                self.settle()
                run = fn(n)
                runs.append(run)
                log(
                    f"{step} {run.side} #{n + 1}: {run.seconds:.1f} s, peak RSS {run.rss_mib:.0f} MiB"
                )
        return runs


# --- summary and report -----------------------------------------------------------------------


def summarize(step: str, db_bytes: int, runs: list[Run]) -> dict[str, Any]:
    """Medians of the seconds, maxima of the peak RSS, per side; MB/s over our dump size."""
    ours = [r for r in runs if r.side == "ours"]
    shell = [r for r in runs if r.side == "shell"]
    dump_bytes = int(statistics.median(r.dump_bytes for r in ours))
    out: dict[str, Any] = {"step": step, "db_bytes": db_bytes, "dump_bytes": dump_bytes}
    for side, rs in (("ours", ours), ("shell", shell)):
        seconds = statistics.median(r.seconds for r in rs)
        tool = [r.tool_rss_mib for r in rs if r.tool_rss_mib is not None]
        out[side] = {
            "seconds": seconds,
            "mb_per_s": dump_bytes / MIB / seconds,
            "peak_rss_mib": max(r.rss_mib for r in rs),
            "tool_peak_rss_mib": max(tool) if tool else None,
            "stored_bytes": int(statistics.median(r.stored_bytes for r in rs)),
        }
    counts = [r.count_seconds for r in ours if r.count_seconds is not None]
    if counts:
        seconds = statistics.median(r.seconds - (r.count_seconds or 0.0) for r in ours)
        out["ours_without_count"] = {
            "seconds": seconds,
            "mb_per_s": dump_bytes / MIB / seconds,
            "count_seconds": statistics.median(counts),
        }
    out["ratio"] = out["ours"]["mb_per_s"] / out["shell"]["mb_per_s"]
    return out


def table(summaries: list[dict[str, Any]]) -> str:
    """The side-by-side table."""
    head = ("step", "DB MB", "dump MB", "side", "seconds", "MB/s", "ours/shell", "peak RSS MB")
    rows: list[tuple[str, ...]] = [head]
    for s in summaries:
        common = (s["step"], f"{s['db_bytes'] / MIB:.0f}", f"{s['dump_bytes'] / MIB:.0f}")
        o, sh = s["ours"], s["shell"]
        tool = "pg_dump" if s["step"].startswith("backup") else "pg_restore"
        rss = f"{o['peak_rss_mib']:.1f}"
        if o["tool_peak_rss_mib"] is not None:
            rss += f" (+{tool} {o['tool_peak_rss_mib']:.1f})"
        rows.append(
            (*common, "ours", f"{o['seconds']:.1f}", f"{o['mb_per_s']:.1f}", f"{s['ratio']:.2f}", rss)
        )
        if "ours_without_count" in s:
            w = s["ours_without_count"]
            rows.append(
                (
                    "",
                    "",
                    "",
                    "ours w/o count",
                    f"{w['seconds']:.1f}",
                    f"{w['mb_per_s']:.1f}",
                    f"{w['mb_per_s'] / sh['mb_per_s']:.2f}",
                    f"(count {w['count_seconds']:.1f} s)",
                )
            )
        rows.append(
            ("", "", "", "shell", f"{sh['seconds']:.1f}", f"{sh['mb_per_s']:.1f}", "1.00",
             f"{sh['peak_rss_mib']:.1f} (largest process)")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(summaries: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The issue's targets, each with whether this run met it."""
    checks: list[tuple[str, bool]] = []
    for s in summaries:
        checks.append(
            (
                f"{s['step']}: ours/shell throughput {s['ratio']:.2f} >= {MIN_THROUGHPUT_RATIO}",
                s["ratio"] >= MIN_THROUGHPUT_RATIO,
            )
        )
        rss = s["ours"]["peak_rss_mib"]
        checks.append((f"{s['step']}: our peak RSS {rss:.1f} MB < {MAX_RSS_MIB:.0f} MB", rss < MAX_RSS_MIB))
    backups = [s for s in summaries if s["step"].startswith("backup")]
    if len(backups) == 2:
        small, big = (b["ours"]["peak_rss_mib"] for b in backups)
        factor = backups[1]["db_bytes"] / backups[0]["db_bytes"]
        checks.append(
            (
                f"backup: peak RSS at {factor:.1f}x the database {big:.1f} MB <= "
                f"{small:.1f} MB (+{RSS_TOLERANCE_MIB:.0f} MB noise)",
                big <= small + RSS_TOLERANCE_MIB,
            )
        )
    return checks


def versions(pg_dump: str) -> dict[str, str]:
    """Versions of everything measured, for the JSON."""
    import cryptography
    import zstandard

    def first_line(args: list[str]) -> str:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    return {
        "python": platform.python_version(),
        "zstandard": f"{zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
        "cryptography": cryptography.__version__,
        "pg_dump": first_line([pg_dump, "--version"]),
        "zstd": first_line(["zstd", "--version"]),
        "age": first_line(["age", "--version"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=int, default=1024, help="database size in MiB (1024)")
    parser.add_argument(
        "--rss-scale", type=int, default=None, help="then grow to this size (MiB) and back up again"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (2)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory ({DEFAULT_DIR})")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--child", choices=("backup", "restore"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    if args.rss_scale is not None and args.rss_scale <= args.scale:
        parser.error("--rss-scale must be larger than --scale")

    from siprec_backup.lab import Lab
    from siprec_backup.lab.postgres import PostgresPrimary

    root = args.dir.resolve()
    lab = Lab(root, services=[PostgresPrimary()])  # no replica: nothing measured involves it
    if root.exists() and any(root.iterdir()):
        log(f"removing the previous lab in {root}")
        lab.down()
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    log(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    log(f"starting the lab in {root}")
    state = lab.up(prefect=False)
    work = root / "bench"
    work.mkdir()
    summaries: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        bench = Bench(root, state, work)
        bench.fill(args.scale)
        db_bytes = bench.database_bytes()
        steps: list[tuple[str, Callable[[int], Run], Callable[[int], Run]]] = [
            ("backup", bench.backup_ours, bench.backup_shell),
            ("restore", bench.restore_ours, bench.restore_shell),
        ]
        for step, ours, shell in steps:
            r = bench.alternate(step, ours, shell, args.repeat)
            runs[step] = [asdict(x) for x in r]
            summaries.append(summarize(step, db_bytes, r))
        if args.rss_scale:
            bench.fill(args.rss_scale)
            big_bytes = bench.database_bytes()
            step = f"backup {big_bytes / db_bytes:.1f}x"
            r = bench.alternate(step, bench.backup_ours, bench.backup_shell, args.repeat)
            runs[step] = [asdict(x) for x in r]
            summaries.append(summarize(step, big_bytes, r))
        load_after = os.getloadavg()
        report = table(summaries)
        checks = verdicts(summaries)
        print()
        print(report)
        print()
        for text, ok in checks:
            print(f"  {'PASS' if ok else 'MISS'}  {text}")
        print()
        print(
            f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
            f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
            f"{os.cpu_count()} CPUs; medians of {args.repeat} runs; MB = MiB"
        )
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"{started:%Y%m%dT%H%M%SZ}.json"
        result = {
            "started_at": started.isoformat(timespec="seconds"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "load_average": {"before": load_before, "after": load_after},
            "versions": versions(bench.source.tool("pg_dump")),
            "summary": summaries,
            "targets": [{"target": t, "met": ok} for t, ok in checks],
            "runs": runs,
            "table": report,
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.keep:
            log(f"lab left running in {root} (stop it with: siprec-backup lab down --dir {root})")
        else:
            log("stopping the lab")
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
