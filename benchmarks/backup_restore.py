"""Benchmark: our backup and restore next to ``pg_dump -Fc -Z0 | zstd -3 | age`` on a lab DB.

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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
#: "No higher at 4x": peaks of identical runs differ by up to about 2 MiB (how many of zstd's
#: job buffers a run happens to touch).
RSS_TOLERANCE_MIB = 2.0
#: Our buffers fill up during the first half second or so; shorter runs cannot show a trend.
MIN_SECONDS_FOR_GROWTH = 5.0
#: The flags our restore gives pg_restore (siprec_backup.sources.postgres.PostgresRestore).
PG_RESTORE_FLAGS = ["--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error"]
CLUSTER = "bench"
SOURCE_NAME = "siprec"
#: What the child reports beyond the table's numbers; kept in the JSON.
EXTRA_KEYS = (
    "child_wall_seconds",
    "cpu_seconds",
    "tool_cpu_seconds",
    "rss_before_run_mib",
    "ru_maxrss_mib",
    "rss_first_half_mib",
    "rss_second_half_mib",
    "rss_timeline",
)


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


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class RssSampler:
    """Samples this process's VmRSS every ``interval`` seconds while a run lasts, to show whether
    memory keeps growing during a run or plateaus early (peak RSS alone cannot tell)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - t0, _status_mib("VmRSS")))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, Any]:
        """Peak RSS in each half of the run, and a timeline of at most 40 points."""
        half = len(self.samples) // 2
        first, second = self.samples[:half], self.samples[half:]
        step = max(1, len(self.samples) // 40)
        return {
            "rss_first_half_mib": max((m for _, m in first), default=None),
            "rss_second_half_mib": max((m for _, m in second), default=None),
            "rss_timeline": [(round(t, 1), round(m, 1)) for t, m in self.samples[::step]],
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(params: dict[str, Any], run: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Call ``run()`` and measure it: wall and CPU seconds, the peak RSS of this process and the
    RSS timeline, and the peak RSS and CPU of the pg_dump / pg_restore it ran (the tool wrapper
    writes those; see Bench.tool_wrappers).

    Peak RSS is VmHWM, not ru_maxrss: Linux carries the RSS high-water mark of the process that
    spawned us into our ru_maxrss (execve keeps the old image's peak), so ru_maxrss could show
    the benchmark driver's memory. It is reported too, for reference.
    """
    rss_before = _status_mib("VmHWM")
    cpu0 = _cpu_seconds()
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - t0
    tool = read_time_file(Path(params["tool_time_file"]))
    return result, {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "rss_mib": _status_mib("VmHWM"),
        "rss_before_run_mib": rss_before,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tool_rss_mib": tool[0] if tool else None,
        "tool_cpu_seconds": tool[1] if tool else None,
        **sampler.report(),
    }


def read_time_file(path: Path) -> tuple[float, float] | None:
    """(peak RSS MiB, user + system CPU seconds) from what ``under_time`` had GNU time write."""
    try:
        rss, user, system = path.read_text().splitlines()[-1].split()
        return int(rss) / 1024, float(user) + float(system)
    except (OSError, ValueError, IndexError):
        return None


def child_backup(params: dict[str, Any]) -> dict[str, Any]:
    """Run ``run_backup`` once into a LocalStore; timing covers run_backup only (no imports)."""
    from siprec_backup.backup import run_backup
    from siprec_backup.manifest import MANIFEST_NAME, backup_prefix
    from siprec_backup.sources.postgres import PostgresSource
    from siprec_backup.storage import LocalStore

    source = PostgresSource(_target_from(params))
    store, key = LocalStore(params["store"]), _key_from(params)
    manifest, report = measured(
        params,
        lambda: run_backup(source, store, key, cluster=CLUSTER, source_name=SOURCE_NAME),
    )
    base = backup_prefix("", manifest.cluster, manifest.source, manifest.backup_id)
    return {
        "dump_bytes": manifest.object.plaintext_bytes,
        "stored_bytes": manifest.object.ciphertext_bytes,
        "manifest_key": base + MANIFEST_NAME,
        "tables": manifest.tables,
        **report,
    }


def child_restore(params: dict[str, Any]) -> dict[str, Any]:
    """Run ``run_restore`` once; the row count it ends with is timed apart by wrapping it."""
    import siprec_backup.restore as restore_module
    import siprec_backup.sources.postgres as postgres_module
    from siprec_backup.manifest import Manifest
    from siprec_backup.storage import LocalStore

    store = LocalStore(params["store"])
    with store.open_reader(params["manifest_key"]) as f:
        manifest = Manifest.from_json(f.read(), where=params["manifest_key"])
    count_seconds: list[float] = []
    count_rows = postgres_module.restored_row_counts

    def timed_count(target: Any) -> dict[str, int]:
        c0 = time.perf_counter()
        try:
            return count_rows(target)
        finally:
            count_seconds.append(time.perf_counter() - c0)

    postgres_module.restored_row_counts = timed_count  # what PostgresTarget.restored_counts calls
    key, target = _key_from(params), _target_from(params)
    result, report = measured(
        params, lambda: restore_module.run_restore(store, manifest, key, target)
    )
    return {
        "count_seconds": sum(count_seconds),
        "dump_bytes": result.plaintext_bytes,
        "tables": result.tables,
        **report,
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
    rss_mib: float  # ours: our process (VmHWM); shell: the largest process of the pipeline
    cpu_seconds: float  # ours: our process + pg_dump / pg_restore; shell: the whole pipeline
    tool_rss_mib: float | None = None  # ours: the pg_dump / pg_restore it ran
    dump_bytes: int = 0
    stored_bytes: int = 0
    count_seconds: float | None = None  # ours, restore: the row count check at its end
    extra: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def run_command(
    args: list[str], *, what: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> tuple[float, bytes]:
    """Run ``args`` to completion; (wall seconds, stdout). BenchError with stderr on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        done = subprocess.run(args, input=stdin, stdout=out, stderr=err, env=env, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"{what} failed (exit {done.returncode}):\n{tail}")
        out.seek(0)
        return seconds, out.read()


def under_time(args: list[str], out_file: Path) -> list[str]:
    """``args`` under GNU time, which writes to ``out_file`` the peak RSS of the largest process
    among the command and its descendants, and the CPU seconds of them all (read_time_file).
    The small ``time`` process in between matters: a program exec'd directly by this (larger)
    Python process would inherit its RSS high-water mark."""
    return ["/usr/bin/time", "-f", "%M %U %S", "-o", str(out_file), *args]


def wrap_tools(bin_dir: Path, tools: dict[str, str], time_file: Path) -> Path:
    """A new ``bin_dir`` whose scripts ``name`` exec ``tools[name]`` under GNU time, so the peak
    RSS and CPU of the tool our engine runs can be reported next to our own (read_time_file;
    a few ms of overhead)."""
    bin_dir.mkdir()
    for name, real in tools.items():
        script = bin_dir / name
        command = shlex.join(under_time([real], time_file))
        script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        script.chmod(0o755)
    return bin_dir


def ours_run(r: dict[str, Any], **fields: Any) -> Run:
    """The Run of one child's report (what ``measured`` returned, plus ``dump_bytes`` and the
    ``child_wall_seconds`` the parent adds)."""
    return Run(
        side="ours",
        seconds=r["seconds"],
        rss_mib=r["rss_mib"],
        cpu_seconds=r["cpu_seconds"] + (r["tool_cpu_seconds"] or 0.0),
        tool_rss_mib=r["tool_rss_mib"],
        dump_bytes=r["dump_bytes"],
        extra={k: r.get(k) for k in EXTRA_KEYS},
        **fields,
    )


def shell_run(
    pipeline: str, what: str, time_file: Path, env: dict[str, str] | None = None, **fields: Any
) -> Run:
    """Run ``pipeline`` under ``bash -o pipefail`` and GNU time: its wall seconds, the peak RSS
    of its largest process and the CPU seconds of all of them."""
    seconds, _ = run_command(
        under_time(["bash", "-o", "pipefail", "-c", pipeline], time_file), what=what, env=env
    )
    measured = read_time_file(time_file)
    if measured is None:
        raise BenchError(f"{what}: GNU time wrote nothing to {time_file}")
    rss, cpu = measured
    return Run(side="shell", seconds=seconds, rss_mib=rss, cpu_seconds=cpu, **fields)


def alternate(
    step: str,
    ours: Callable[[int], Run],
    shell: Callable[[int], Run],
    repeat: int,
    settle: Callable[[], None] = lambda: None,
) -> list[Run]:
    """``repeat`` rounds of both sides; which side goes first alternates every round, and
    ``settle()`` runs before each measurement."""
    runs: list[Run] = []
    for n in range(repeat):
        for measure in [ours, shell] if n % 2 == 0 else [shell, ours]:
            settle()
            run = measure(n)
            runs.append(run)
            log(f"{step} {run.side} #{n + 1}: {run.seconds:.1f} s, {run.rss_mib:.1f} MiB peak")
    return runs


class TreeSampler:
    """Samples the RSS of a process and all its descendants every 50 ms (psutil): the peak of
    their sum, the peak per process name, and the last CPU seconds seen per descendant."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_total = 0.0
        self.peak_by_name: dict[str, float] = {}
        self._cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0.0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    rss = proc.memory_info().rss / MIB
                    name = proc.name()
                    cpu = proc.cpu_times()
                except psutil.Error:
                    continue
                total += rss
                self.peak_by_name[name] = max(self.peak_by_name.get(name, 0.0), rss)
                if proc.pid != self.pid:
                    self._cpu[proc.pid] = (name, cpu.user + cpu.system)
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(0.05)

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU seconds of the descendants called ``name`` (as last sampled)."""
        return sum(cpu for n, cpu in self._cpu.values() if n == name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_sampled(args: list[str], stdin: bytes = b"") -> tuple[float, bytes, TreeSampler]:
    """Run ``args``, sampling its process tree; (seconds, stdout, sampler)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=err)
        sampler = TreeSampler(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        code = proc.wait()
        seconds = time.perf_counter() - t0
        sampler.stop()
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"{args[0]} failed (exit {code}):\n{tail}")
        out.seek(0)
        return seconds, out.read(), sampler


class Bench:
    """The lab, the keys and the measurements of one benchmark run."""

    def __init__(self, state: Any, work: Path) -> None:
        from siprec_backup.stream import MasterKey

        self.pg = state.postgres()
        self.work = work
        self.key = MasterKey.generate("bench")
        self.source = self.pg.target()  # the application role, with its password
        self.tool_time_file = work / "tool.time"
        self.wrapped_bin = self.tool_wrappers()
        self.age_identity = work / "age-identity.txt"
        subprocess.run(
            ["age-keygen", "-o", str(self.age_identity)], check=True, capture_output=True
        )
        self.age_recipient = subprocess.run(
            ["age-keygen", "-y", str(self.age_identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.last_ours: dict[str, str] | None = None  # the newest backups: what restores read
        self.last_shell: Path | None = None
        self.tables: dict[str, int] = {}

    def tool_wrappers(self) -> Path:
        """pg_dump / pg_restore under GNU time (see wrap_tools)."""
        tools = {name: self.source.tool(name) for name in ("pg_dump", "pg_restore")}
        return wrap_tools(self.work / "bin", tools, self.tool_time_file)

    # -- helpers -------------------------------------------------------------------------------

    def target(self, dbname: str | None = None) -> Any:
        return replace(self.source, dbname=dbname or self.source.dbname)

    def child(self, mode: str, dbname: str | None = None, **extra: str) -> dict[str, Any]:
        """Run our engine once in a child process (parameters and secrets go over stdin)."""
        t = self.target(dbname)
        params = {
            "target": {
                "host": t.host,
                "port": t.port,
                "user": t.user,
                "dbname": t.dbname,
                "password": t.password,
                "bin_dir": str(self.wrapped_bin),
            },
            "key_id": self.key.key_id,
            "key_hex": self.key.material.hex(),
            "tool_time_file": str(self.tool_time_file),
            **extra,
        }
        self.tool_time_file.unlink(missing_ok=True)
        wall, out = run_command(
            [sys.executable, str(Path(__file__).resolve()), "--child", mode],
            what=f"our {mode}",
            stdin=json.dumps(params).encode(),
        )
        result: dict[str, Any] = json.loads(out)
        result["child_wall_seconds"] = wall
        return result

    def shell(self, pipeline: str, what: str, **fields: Any) -> Run:
        """Run ``pipeline`` with PGPASSWORD in the environment, as our engine passes it."""
        env = self.source.client_env()
        return shell_run(pipeline, what, self.work / "shell.time", env, **fields)

    def admin(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        conninfo = self.pg.conninfo(superuser=True, dbname=dbname)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement.encode())

    def scratch(self, name: str) -> None:
        """A fresh, empty database ``name`` owned by the application role."""
        self.drop(name)
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
        last = [t0]

        def progress(size: int) -> None:
            if time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                log(f"  seeding: {size / MIB:.0f} MiB")

        stats = fill(self.pg.conninfo(), target_mb, progress=progress)
        log(f"seeded to {stats.mb:.0f} MiB in {time.perf_counter() - t0:.0f} s; VACUUM ANALYZE")
        self.admin("VACUUM (ANALYZE)", dbname=self.pg.dbname)

    # -- measurements --------------------------------------------------------------------------

    def backup_ours(self, n: int) -> Run:
        store = self.work / f"ours-{n}"
        r = self.child("backup", store=str(store))
        if self.last_ours is not None:
            shutil.rmtree(self.last_ours["store"], ignore_errors=True)
        self.last_ours = {"store": str(store), "manifest_key": r["manifest_key"]}
        self.tables = r["tables"]
        return ours_run(r, stored_bytes=r["stored_bytes"])

    def backup_shell(self, n: int) -> Run:
        out_file = self.work / f"shell-{n}.zst.age"
        dump = [self.source.tool("pg_dump"), *self.source.client_args(), "-Fc", "-Z0"]
        pipeline = (
            f"{shlex.join(dump)} | zstd -3 -q -c | "
            f"age -r {shlex.quote(self.age_recipient)} > {shlex.quote(str(out_file))}"
        )
        run = self.shell(pipeline, "shell backup")
        run.stored_bytes = out_file.stat().st_size
        if self.last_shell is not None and self.last_shell != out_file:
            self.last_shell.unlink(missing_ok=True)
        self.last_shell = out_file
        return run

    def restore_ours(self, n: int) -> Run:
        assert self.last_ours is not None
        dbname = "bench_restore_ours"
        self.scratch(dbname)
        try:
            r = self.child("restore", dbname=dbname, **self.last_ours)
        finally:
            self.drop(dbname)
        return ours_run(r, count_seconds=r["count_seconds"])

    def restore_shell(self, n: int) -> Run:
        from siprec_backup.lab import row_counts

        assert self.last_shell is not None
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
            run = self.shell(pipeline, "shell restore")
            counts = row_counts(self.pg.conninfo(dbname=dbname))  # a sanity check, not timed
        finally:
            self.drop(dbname)
        restored = {f"siprec.{table}": rows for table, rows in counts.items()}
        if self.tables and restored != self.tables:
            raise BenchError(f"shell restore: row counts {restored} differ from {self.tables}")
        return run

    def alternate(
        self, step: str, ours: Callable[[int], Run], shell: Callable[[int], Run], repeat: int
    ) -> list[Run]:
        """``repeat`` rounds of both sides, a CHECKPOINT before each run."""
        return alternate(step, ours, shell, repeat, self.settle)


# --- summary and report -----------------------------------------------------------------------


def summarize(step: str, db_bytes: int, runs: list[Run]) -> dict[str, Any]:
    """Per side: medians of the seconds and CPU seconds, the maximum and the median of the peak
    RSS, MB/s over our dump size; for ours also how much RSS grew within a run."""
    ours = [r for r in runs if r.side == "ours"]
    dump_bytes = int(statistics.median(r.dump_bytes for r in ours))
    out: dict[str, Any] = {"step": step, "db_bytes": db_bytes, "dump_bytes": dump_bytes}
    for side in ("ours", "shell"):
        rs = [r for r in runs if r.side == side]
        seconds = statistics.median(r.seconds for r in rs)
        tool = [r.tool_rss_mib for r in rs if r.tool_rss_mib is not None]
        out[side] = {
            "seconds": seconds,
            "mb_per_s": dump_bytes / MIB / seconds,
            "cpu_seconds": statistics.median(r.cpu_seconds for r in rs),
            "peak_rss_mib": max(r.rss_mib for r in rs),
            "median_peak_rss_mib": statistics.median(r.rss_mib for r in rs),
            "tool_peak_rss_mib": max(tool) if tool else None,
            "stored_bytes": int(statistics.median(r.stored_bytes for r in rs)),
        }
    out["ours"]["rss_growth_in_run_mib"] = max(
        (
            r.extra["rss_second_half_mib"] - r.extra["rss_first_half_mib"]
            for r in ours
            if r.seconds >= MIN_SECONDS_FOR_GROWTH and r.extra.get("rss_first_half_mib")
        ),
        default=None,
    )
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


def table(summaries: list[dict[str, Any]], sizes: tuple[str, str] = ("DB MB", "dump MB")) -> str:
    """The side-by-side table; ``sizes`` names the columns of ``db_bytes`` and ``dump_bytes``,
    a summary's ``tool`` the program our engine ran (default: pg_dump / pg_restore)."""
    head = ("step", *sizes, "side", "seconds", "MB/s", "ours/shell", "CPU s", "peak RSS MB")
    rows: list[tuple[str, ...]] = [head]
    for s in summaries:
        o, sh = s["ours"], s["shell"]
        tool = s.get("tool") or ("pg_dump" if s["step"].startswith("backup") else "pg_restore")
        rss = f"{o['peak_rss_mib']:.1f} (median {o['median_peak_rss_mib']:.1f})"
        if o["tool_peak_rss_mib"] is not None:
            rss += f" + {tool} {o['tool_peak_rss_mib']:.1f}"
        rows.append(
            (s["step"], f"{s['db_bytes'] / MIB:.0f}", f"{s['dump_bytes'] / MIB:.0f}", "ours",
             f"{o['seconds']:.1f}", f"{o['mb_per_s']:.1f}", f"{s['ratio']:.2f}",
             f"{o['cpu_seconds']:.1f}", rss)
        )  # fmt: skip
        if "ours_without_count" in s:
            w = s["ours_without_count"]
            rows.append(
                ("", "", "", "ours w/o count", f"{w['seconds']:.1f}", f"{w['mb_per_s']:.1f}",
                 f"{w['mb_per_s'] / sh['mb_per_s']:.2f}", "",
                 f"(row count {w['count_seconds']:.1f} s)")
            )  # fmt: skip
        rows.append(
            ("", "", "", "shell", f"{sh['seconds']:.1f}", f"{sh['mb_per_s']:.1f}", "1.00",
             f"{sh['cpu_seconds']:.1f}", f"{sh['peak_rss_mib']:.1f} (largest process)")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(
    summaries: list[dict[str, Any]], flat: str = "backup"
) -> list[tuple[str, bool | None]]:
    """The issue's targets, each with whether this run met it: per step throughput and peak
    RSS; then "flat memory" between the first and the last step named ``flat...``."""
    checks: list[tuple[str, bool | None]] = []
    for s in summaries:
        ratio = s["ratio"]
        checks.append(
            (
                f"{s['step']}: ours/shell throughput {ratio:.2f} >= {MIN_THROUGHPUT_RATIO}",
                ratio >= MIN_THROUGHPUT_RATIO,
            )
        )
        rss = s["ours"]["peak_rss_mib"]
        checks.append(
            (f"{s['step']}: our peak RSS {rss:.1f} MB < {MAX_RSS_MIB:.0f} MB", rss < MAX_RSS_MIB)
        )
    compared = [s for s in summaries if s["step"].startswith(flat)]
    if len(compared) >= 2:
        checks += growth_checks(flat, compared[0], compared[-1])
    return checks


def growth_checks(
    what: str, small_step: dict[str, Any], big_step: dict[str, Any]
) -> list[tuple[str, bool | None]]:
    """Our memory is flat: the median peak at the larger size is at most RSS_TOLERANCE_MIB
    above the smaller's, and within each run at the larger size the second half's peak is at
    most that much above the first half's (runs under MIN_SECONDS_FOR_GROWTH s not judged)."""
    small, big = small_step["ours"], big_step["ours"]
    factor = big_step["db_bytes"] / small_step["db_bytes"]
    checks: list[tuple[str, bool | None]] = [
        (
            f"{what} at {factor:.1f}x the size: median peak RSS "
            f"{big['median_peak_rss_mib']:.1f} MB <= {small['median_peak_rss_mib']:.1f} MB "
            f"+ {RSS_TOLERANCE_MIB:.0f} MB noise (maxima {big['peak_rss_mib']:.1f} and "
            f"{small['peak_rss_mib']:.1f} MB)",
            big["median_peak_rss_mib"] <= small["median_peak_rss_mib"] + RSS_TOLERANCE_MIB,
        )
    ]
    growth = big["rss_growth_in_run_mib"]
    flat = f"{what} at {factor:.1f}x the size: our RSS flat within each run"
    if growth is None:
        checks.append((f"{flat}: runs under {MIN_SECONDS_FOR_GROWTH:.0f} s, not judged", None))
    else:
        checks.append(
            (
                f"{flat} (2nd-half peak - 1st-half peak {growth:+.1f} MB "
                f"<= {RSS_TOLERANCE_MIB:.0f} MB)",
                growth <= RSS_TOLERANCE_MIB,
            )
        )
    return checks


def print_checks(checks: list[tuple[str, bool | None]]) -> bool:
    """Print each target as PASS / MISS / n/a; True if none was missed."""
    for text, ok in checks:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'MISS'}  {text}")
    return all(ok is not False for _, ok in checks)


def stop_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``timeout``) unwind like Ctrl-C, through every ``finally`` that
    stops the servers a benchmark started."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def write_results(name: str, started: datetime, result: dict[str, Any]) -> Path:
    """``result`` as ``benchmarks/results/<name>-<UTC timestamp>.json`` (no name: just the
    timestamp); returns the path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = f"{started:%Y%m%dT%H%M%SZ}"
    out = RESULTS_DIR / (f"{name}-{stamp}.json" if name else f"{stamp}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def versions(pg_dump: str) -> dict[str, str]:
    """Versions of everything measured, for the JSON."""
    import cryptography
    import zstandard

    def first_line(args: list[str]) -> str:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    return {
        "python": platform.python_version(),
        "zstandard": zstandard.__version__,
        "libzstd (ours)": ".".join(map(str, zstandard.ZSTD_VERSION)),
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
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory ({DEFAULT_DIR})"
    )
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

    stop_on_sigterm()
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
    summaries: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        work.mkdir()
        bench = Bench(state, work)
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
        print_checks(checks)
        print()
        print(
            f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
            f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
            f"{os.cpu_count()} CPUs; medians of {args.repeat} runs; MB = MiB"
        )
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
        print(f"results: {write_results('', started, result)}")
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
