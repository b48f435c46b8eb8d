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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.backup_restore import MAX_RSS_MIB, MIN_THROUGHPUT_RATIO  # noqa: E402

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

        redis_source.RdbCounter = _NoScan  # type: ignore[misc]
        redis_source.RedisDump.finish = lambda self: redis_source.DumpFacts()  # type: ignore[method-assign]
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
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.password = secrets.token_urlsafe(24)
        self.key_hex = secrets.token_hex(32)
        identity = workdir / "age.key"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        self.recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        from siprec_backup.lab._process import free_ports

        self.port = free_ports(1)[0]
        conf = workdir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'requirepass "{self.password}"\n')
        self.server = subprocess.Popen(
            [
                "redis-server",
                str(conf),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(workdir), "--maxmemory", "0"),
                *("--repl-diskless-sync-delay", "0", "--logfile", str(workdir / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.target = self._target()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.target.key_counts()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _target(self) -> Any:
        from siprec_backup.sources.redis import RedisTarget

        return RedisTarget(host="127.0.0.1", port=self.port, password=self.password)

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(30)

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
        store = self.workdir / "store"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="MiB of data")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main()
        return
    workdir = Path(tempfile.mkdtemp(prefix="siprec-redis-bench-", dir="/var/tmp"))
    bench = Bench(workdir)
    rows: list[dict[str, Any]] = []
    try:
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
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"redis-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
