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
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

from backup_restore import RssSampler, _status_mib, log  # noqa: E402 - benchmarks/ on the path

DEFAULT_DIR = Path("/var/tmp/siprec-bench-mariadb-lab")
MIB = 1 << 20
MIN_THROUGHPUT_RATIO = 0.9
MAX_RSS_MIB = 150.0


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
        manifest = run_backup(MySQLSource(target), store, key, cluster="bench", source_name="m")
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


# --- the parent -------------------------------------------------------------------------------


class TreeSampler:
    """Samples the RSS of a process and all its descendants every 50 ms (psutil)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_total = 0.0
        self.peak_by_name: dict[str, float] = {}
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
                except psutil.Error:
                    continue
                total += rss
                self.peak_by_name[name] = max(self.peak_by_name.get(name, 0.0), rss)
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(args: list[str], stdin: bytes = b"") -> tuple[float, bytes, TreeSampler]:
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
            raise RuntimeError(f"{args[0]} failed ({code}): {err.read().decode()[-2000:]}")
        out.seek(0)
        return seconds, out.read(), sampler


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

    lab = Lab(opts.dir, services=[MariaDBPrimary()])
    state = lab.up()
    ep = state.mariadb()
    target = ep.target()
    key = MasterKey.generate("bench")
    work = Path(tempfile.mkdtemp(prefix="siprec-mysql-bench-", dir="/var/tmp"))
    identity = work / "age.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    dump_tool = target.tool("mariadb-dump", "mysqldump")
    flags = dump_flags(tool_version(dump_tool))
    results: list[dict[str, Any]] = []
    print(f"load average before: {os.getloadavg()}")
    try:
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
                    store = work / "store"
                    subprocess.run(["rm", "-rf", str(store)], check=True)
                    store.mkdir()
                    if side == "ours":
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
                            pipeline = (
                                f"{cmd} {shlex.quote(db)} | zstd -3 -q | "
                                f"age -r {shlex.quote(recipient)} > {shlex.quote(str(store / 'x'))}"
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
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        if not opts.keep:
            lab.down()
    print(f"load average after: {os.getloadavg()}")
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
    print(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main()
    else:
        sys.exit(main())
