"""Benchmark: our Redis backup next to ``redis-cli --rdb - | zstd -3 | age`` on a private Redis.

One run starts its own redis-server 7 (free loopback port, password in a 0600 config file, no
maxmemory), seeds it with the lab's SIPREC filler to each ``--sizes`` MiB in turn, and at each
size measures, alternating the two sides ``--repeat`` times:

* ours:  ``run_backup(RedisSource -> LocalStore)`` in a child Python process (replication link,
  RDB scan, sha256, zstd -3, AES-256-GCM);
* shell: ``bash -o pipefail -c 'redis-cli --rdb - | zstd -3 | age -r KEY > file'`` with the
  password in ``REDISCLI_AUTH`` (never on a command line).

Throughput is RDB bytes per wall second (ours: ``run_backup`` alone, timed in the child, as
benchmarks/backup_restore.py does; the shell: the whole pipeline); peak RSS is the highest sum
of RSS over the measured process tree (psutil, sampled every 20 ms). A third side,
``ours-noscan``, runs our backup with the RDB key scanner switched off, to show what the scan
costs. Results go to stdout and ``benchmarks/results/redis-<timestamp>.json``.

Then, at each size, the restore of each side's newest backup, three sides taking turns
``--repeat`` times:

* ours, verification path: ``run_restore`` into the restore verification's scratch Redis in a
  child process (the RDB written to a file, a redis-server started on it and timed until
  loaded, its keys counted against the manifest): the same work as the shell side;
* the shell: ``age -d | zstd -d > dump.rdb`` and a redis-server started on that file, timed
  until loaded;
* ours into a live server: ``run_restore`` into an empty running redis-server (scratch server,
  DUMP / RESTORE) in a child process. Different work: its ratio is reported, not judged (see
  benchmarks/README.md, issue 4).

Usage: .venv/bin/python benchmarks/redis_backup.py --sizes 256 1024
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.backup_restore import (  # noqa: E402
    MAX_RSS_MIB,
    MIN_THROUGHPUT_RATIO,
    BenchError,
    Run,
    log,
    measured,
    ours_run,
    print_checks,
    run_sampled,
    shell_run,
    stop_on_sigterm,
    summarize,
    table,
    verdicts,
    write_results,
)

RESULTS_DIR = ROOT / "benchmarks" / "results"
MIB = 1 << 20


# --- the child: one run of our engine ---------------------------------------------------------


def child_main() -> None:
    """Back up once; parameters (with the password) arrive as JSON on stdin."""
    params = json.load(sys.stdin)
    from siprec_backup.backup import run_backup
    from siprec_backup.sources import rdb
    from siprec_backup.sources import redis as redis_source
    from siprec_backup.sources.redis import RedisSource, RedisTarget
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey

    if params["noscan"]:  # measure the scanner's cost: a counter that drops every chunk

        class _NoScan(rdb.RdbCounter):
            def feed(self, chunk: bytes) -> None:
                return None

            def result(self) -> rdb.RdbSummary:
                return rdb.RdbSummary(bytes_scanned=-1)

        redis_source.RdbCounter = _NoScan  # type: ignore[attr-defined]
        redis_source.RedisDump.finish = lambda self: redis_source.DumpFacts()  # type: ignore[attr-defined,method-assign]
    target = RedisTarget(host="127.0.0.1", port=params["port"], password=params["password"])
    key = MasterKey("bench", bytes.fromhex(params["key_hex"]))
    t0 = time.perf_counter()
    manifest = run_backup(
        RedisSource(target), LocalStore(params["store"]), key, cluster="bench", source_name="redis"
    )
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - t0,
                "rdb_bytes": manifest.object.plaintext_bytes,
                "stored_bytes": manifest.object.ciphertext_bytes,
                "tables": manifest.tables,
            }
        )
    )


# --- the parent -------------------------------------------------------------------------------


class TreeSampler:
    """Peak of the summed RSS of a process and all its descendants."""

    def __init__(self, proc: psutil.Process, interval: float = 0.02) -> None:
        self.proc, self.interval, self.peak = proc, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / MIB


def run_measured(
    argv: list[str], *, stdin: bytes | None, env: dict[str, str]
) -> tuple[float, float, bytes]:
    """Run a command; (wall seconds, peak tree RSS MiB, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    sampler = TreeSampler(psutil.Process(proc.pid))
    out, err = proc.communicate(stdin)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return seconds, peak, out


class Bench:
    """The source Redis, the restore target and both sides' measurements. ``start()`` starts
    the servers; ``close()`` stops every server started (also after a failure)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.password = secrets.token_urlsafe(24)
        self.key_hex = secrets.token_hex(32)
        self.identity = workdir / "age.key"
        subprocess.run(["age-keygen", "-o", str(self.identity)], check=True, capture_output=True)
        self.recipient = subprocess.run(
            ["age-keygen", "-y", str(self.identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.conf = workdir / "redis.conf"
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'requirepass "{self.password}"\n')
        self.servers: list[subprocess.Popen[bytes]] = []
        self.expected_keys: dict[str, int] = {}  # keys per database in our newest backup

    def start(self) -> None:
        """The source server (seeded later) and the empty target our restore writes into."""
        self.port = self.start_server(self.workdir / "source")
        self.target = self._target(self.port)
        self.restore_port = self.start_server(self.workdir / "restore-target")
        self.restore_target = self._target(self.restore_port)
        for target in (self.target, self.restore_target):
            wait_loaded(target)

    def start_server(self, data_dir: Path, dbfilename: str = "dump.rdb") -> int:
        """A redis-server on a free loopback port with our password, loading ``data_dir`` /
        ``dbfilename`` if it exists (never saving); its port."""
        from siprec_backup.lab._process import free_ports

        port = free_ports(1)[0]
        data_dir.mkdir(exist_ok=True)
        self.servers.append(
            subprocess.Popen(
                [
                    "redis-server",
                    str(self.conf),
                    *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--dir", str(data_dir), "--maxmemory", "0"),
                    *("--dbfilename", dbfilename, "--repl-diskless-sync-delay", "0"),
                    *("--logfile", str(self.workdir / f"redis-{port}.log")),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return port

    def stop_server(self, server: subprocess.Popen[bytes]) -> None:
        server.terminate()
        server.wait(30)
        self.servers.remove(server)

    def _target(self, port: int) -> Any:
        from siprec_backup.sources.redis import RedisTarget

        return RedisTarget(host="127.0.0.1", port=port, password=self.password)

    def close(self) -> None:
        for server in list(self.servers):
            self.stop_server(server)

    def used_mib(self) -> float:
        with self.target.client() as c:
            return int(c.info("memory")["used_memory_dataset"]) / MIB

    def grow_to(self, mib: int) -> None:
        from siprec_backup.lab.redis import fill_redis

        t0 = time.perf_counter()
        while (have := self.used_mib()) < mib:
            fill_redis(self.target, max(8, int(mib - have) // 2))
        print(
            f"seeded to {self.used_mib():.0f} MiB in {time.perf_counter() - t0:.0f} s", flush=True
        )

    def ours(self, noscan: bool = False) -> dict[str, Any]:
        store = self.workdir / ("store-noscan" if noscan else "store")
        shutil.rmtree(store, ignore_errors=True)
        params = {
            "port": self.port,
            "password": self.password,
            "key_hex": self.key_hex,
            "store": str(store),
            "noscan": noscan,
        }
        seconds, peak, out = run_measured(
            [sys.executable, __file__, "--child"],
            stdin=json.dumps(params).encode(),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        result = json.loads(out)  # its "seconds" cover run_backup only (no interpreter start)
        if not noscan:
            self.expected_keys = result["tables"]
        return {"rss_mib": peak, "child_wall_seconds": seconds, **result}

    def shell(self) -> dict[str, Any]:
        out_file = self.workdir / "shell.rdb.zst.age"
        cmd = (
            f"redis-cli -h 127.0.0.1 -p {self.port} --no-auth-warning --rdb - 2>/dev/null"
            f" | zstd -3 -q | age -r {shlex.quote(self.recipient)} > {shlex.quote(str(out_file))}"
        )
        env = {**os.environ, "REDISCLI_AUTH": self.password}
        seconds, peak, _ = run_measured(["bash", "-o", "pipefail", "-c", cmd], stdin=None, env=env)
        return {"seconds": seconds, "rss_mib": peak, "stored_bytes": out_file.stat().st_size}

    # --- restore: each side its own newest backup --------------------------------------------

    def settle(self) -> None:
        """Same start for every restore run: the last run's files written back."""
        os.sync()

    def flush_target(self) -> None:
        with self.restore_target.client() as c:
            c.flushall()

    def restore_child(self, scratch_dir: Path | None) -> Run:
        """run_restore in a child: into a scratch Redis under ``scratch_dir`` if given (the
        verification path), else into the empty target server; the redis-server each one
        starts is sampled from here (its peak RSS and CPU go to the tool columns)."""
        params = {
            "port": self.restore_port,
            "password": self.password,
            "key_hex": self.key_hex,
            "store": str(self.workdir / "store"),
            "scratch_dir": str(scratch_dir) if scratch_dir else None,
            "tool_time_file": str(self.workdir / "none.time"),  # no wrapped tool here
        }
        wall, out, tree = run_sampled(
            [sys.executable, __file__, "--child-restore"], json.dumps(params).encode()
        )
        r = json.loads(out)
        r["child_wall_seconds"] = wall
        r["tool_rss_mib"] = tree.peak_by_name.get("redis-server")
        r["tool_cpu_seconds"] = tree.cpu_seconds("redis-server")
        return ours_run(r)

    def restore_ours(self, n: int) -> Run:
        """Ours into a running server (DUMP / RESTORE), emptied before and after."""
        self.flush_target()
        try:
            return self.restore_child(None)
        finally:
            self.flush_target()

    def restore_ours_file(self, n: int) -> Run:
        """Ours through the verification's scratch Redis: the RDB written to a file, a
        redis-server started on it and timed until loaded, the keys counted: the same work as
        the shell side."""
        return self.restore_child(self.fresh_dir("scratch-restore"))

    def restore_shell(self, n: int) -> Run:
        """``age -d | zstd -d > dump.rdb``, then a redis-server started on that file, timed
        until it has loaded (INFO persistence, polled every 50 ms as our restore polls its
        scratch server). That server is the restored target: like the target of ours, its
        memory is not counted; its CPU is."""
        data_dir = self.fresh_dir("shell-restore")
        pipeline = (
            f"age -d -i {shlex.quote(str(self.identity))} "
            f"{shlex.quote(str(self.workdir / 'shell.rdb.zst.age'))} | zstd -d -q -c > "
            f"{shlex.quote(str(data_dir / 'dump.rdb'))}"
        )
        run = shell_run(pipeline, "shell restore", self.workdir / "shell.time")
        self.load_restored(run, data_dir)
        return run

    def fresh_dir(self, name: str) -> Path:
        data_dir = self.workdir / name
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir()
        return data_dir

    def load_restored(self, run: Run, data_dir: Path) -> None:
        """Start a redis-server on ``data_dir/dump.rdb``, time it until loaded and add that to
        ``run`` (seconds and the server's CPU); then check its keys (not timed) and remove it."""
        t0 = time.perf_counter()
        port = self.start_server(data_dir)
        server = self.servers[-1]
        try:
            target = self._target(port)
            wait_loaded(target)
            load_seconds = time.perf_counter() - t0
            usage = psutil.Process(server.pid)
            cpu = usage.cpu_times()
            run.extra.update(
                pipeline_seconds=run.seconds,
                load_seconds=load_seconds,
                server_rss_mib=usage.memory_info().rss / MIB,
            )
            run.seconds += load_seconds
            run.cpu_seconds += cpu.user + cpu.system
            check_keys(target.key_counts(), self.expected_keys)  # a sanity check, not timed
        finally:
            self.stop_server(server)
            shutil.rmtree(data_dir, ignore_errors=True)


def three_way(step: str, bench: Bench, repeat: int) -> tuple[list[Run], list[Run], list[Run]]:
    """``repeat`` rounds of the three restore sides (ours through the verification path, the
    shell, ours into a running server), the order rotating every round, ``settle()`` before
    each run."""
    sides = [bench.restore_ours_file, bench.restore_shell, bench.restore_ours]
    runs: list[list[Run]] = [[], [], []]
    for n in range(repeat):
        for i in [(n + k) % 3 for k in range(3)]:
            bench.settle()
            run = sides[i](n)
            runs[i].append(run)
            what = ("ours, verification path", "shell", "ours into a running server")[i]
            log(f"{step} {what} #{n + 1}: {run.seconds:.1f} s, {run.rss_mib:.1f} MiB peak")
    return runs[0], runs[1], runs[2]


def check_keys(restored: dict[str, int], backed_up: dict[str, int]) -> None:
    """A restored file holds the keys of our backup of the same data: BenchError if not.
    Keys with a TTL may expire in between (the seed's live at least an hour): fewer are
    logged, not fatal."""
    if set(restored) != set(backed_up) or any(restored[d] > backed_up[d] for d in restored):
        raise BenchError(f"restored keys {restored}, our backup has {backed_up}")
    if restored != backed_up:
        log(f"restored keys {restored}, our backup had {backed_up} (expired since)")


def wait_loaded(target: Any, timeout: float = 3600) -> None:
    """Wait until ``target`` accepts commands and has loaded its RDB (INFO persistence)."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            with target.client() as client:
                if int(client.info("persistence")["loading"]) == 0:
                    return
        except (redis.ConnectionError, redis.BusyLoadingError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def child_restore_main() -> None:
    """Restore the newest backup of the store once into the target; parameters (with the
    password) as JSON on stdin; what ``measured`` reports as JSON on stdout."""
    params = json.load(sys.stdin)
    from siprec_backup.catalog import find_backup
    from siprec_backup.restore import RestoreResult, run_restore
    from siprec_backup.scratch import ScratchInstance, start_scratch
    from siprec_backup.sources.redis import RedisTarget
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey

    key = MasterKey("bench", bytes.fromhex(params["key_hex"]))
    store = LocalStore(params["store"])
    manifest = find_backup(store, "", "bench", "redis")

    scratch: list[ScratchInstance] = []

    def restore() -> RestoreResult:
        if not params["scratch_dir"]:
            live = RedisTarget(host="127.0.0.1", port=params["port"], password=params["password"])
            return run_restore(store, manifest, key, live)
        scratch.append(start_scratch("redis", Path(params["scratch_dir"])))
        return run_restore(store, manifest, key, scratch[0].restore_target(manifest))

    try:
        result, report = measured(params, restore)
    finally:  # not timed: the shell side's server is stopped after its timing too
        for instance in scratch:
            instance.close()
    print(json.dumps({"dump_bytes": result.plaintext_bytes, "tables": result.tables, **report}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="MiB of data")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-restore", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main()
        return
    if args.child_restore:
        child_restore_main()
        return
    stop_on_sigterm()
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="siprec-redis-bench-", dir="/var/tmp"))
    rows: list[dict[str, Any]] = []
    restores: list[dict[str, Any]] = []  # ours (verification path) vs the shell: judged
    live_restores: list[dict[str, Any]] = []  # ours into a running server vs the shell
    restore_runs: dict[str, list[dict[str, Any]]] = {}
    bench: Bench | None = None
    try:
        bench = Bench(workdir)
        bench.start()
        for size in sorted(args.sizes):
            bench.grow_to(size)
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "shell": [], "ours-noscan": []}
            for _ in range(args.repeat):
                runs["ours"].append(bench.ours())
                runs["shell"].append(bench.shell())
                runs["ours-noscan"].append(bench.ours(noscan=True))
            rdb_bytes = runs["ours"][0]["rdb_bytes"]
            row: dict[str, Any] = {"size_mib": size, "rdb_bytes": rdb_bytes, "runs": runs}
            for side, results in runs.items():
                best = min(r["seconds"] for r in results)
                row[side] = {
                    "mb_per_s": rdb_bytes / best / 1e6,
                    "median_seconds": statistics.median(r["seconds"] for r in results),
                    "peak_rss_mib": max(r["rss_mib"] for r in results),
                }
            row["ratio"] = row["ours"]["mb_per_s"] / row["shell"]["mb_per_s"]
            row["scan_cost"] = 1 - row["ours"]["mb_per_s"] / row["ours-noscan"]["mb_per_s"]
            row["tables"] = runs["ours"][0]["tables"]
            rows.append(row)
            print(
                f"{size:>5} MiB (RDB {rdb_bytes / MIB:.0f} MiB): "
                f"ours {row['ours']['mb_per_s']:.0f} MB/s, {row['ours']['peak_rss_mib']:.0f} MiB | "
                f"shell {row['shell']['mb_per_s']:.0f} MB/s, "
                f"{row['shell']['peak_rss_mib']:.0f} MiB | "
                f"ratio {row['ratio']:.2f} (target >= {MIN_THROUGHPUT_RATIO}) | "
                f"no-scan {row['ours-noscan']['mb_per_s']:.0f} MB/s, "
                f"scan cost {row['scan_cost']:.1%}"
                f" | peak RSS target < {MAX_RSS_MIB:.0f} MiB",
                flush=True,
            )
            # Restore: each side its own newest backup of this same data.
            file_step, live_step = (
                f"restore {size} MiB (to a loaded server)",
                f"live restore {size} MiB",
            )
            to_file, shell, live = three_way(file_step, bench, args.repeat)
            restore_runs[file_step] = [asdict(x) for x in to_file + shell]
            restore_runs[live_step] = [asdict(x) for x in live]
            restores.append(
                {**summarize(file_step, size * MIB, to_file + shell), "tool": "redis-server"}
            )
            live_restores.append(
                {**summarize(live_step, size * MIB, live + shell), "tool": "redis-server (scratch)"}
            )
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nrestore (shell: age -d | zstd -d > dump.rdb; redis-server loads it)")
    report = table(restores + live_restores, sizes=("data MB", "RDB MB"))
    print(report)
    checks = verdicts(restores, flat="restore")
    print_checks(checks)
    for s in live_restores:  # different work: reported, not judged (benchmarks/README.md)
        print(f"{s['step']}: ours into a running server / shell {s['ratio']:.2f} (not judged)")
    result = {
        "cpus": os.cpu_count(),
        "rows": rows,
        "restore": restores,
        "live_restore": live_restores,
        "restore_targets": [{"target": t, "met": ok} for t, ok in checks],
        "restore_runs": restore_runs,
        "restore_table": report,
    }
    print(f"results: {write_results('redis', started, result)}")


if __name__ == "__main__":
    main()
