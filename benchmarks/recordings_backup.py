"""Benchmark: our recordings backup next to ``tar -cf - | zstd -3 | age`` on a recordings tree.

For each ``--sizes`` (MiB) a synthetic SIPREC spool is written (per session: a metadata XML of
~1.5 KB, a WAV of 256 KiB-2 MiB of speech-like PCM, an opus file of ~36% of the WAV's size, so
about 70% WAV and 25-30% opus by bytes), then measured, alternating the sides, ``--repeat`` times:

* ours:  ``run_recordings_backup`` into a fresh LocalStore, in a child Python process;
* shell: ``bash -o pipefail -c 'tar -cf - -C root . | zstd -3 | age -r <recipient> > file'``.

Throughput is source bytes per second; peak RSS is the largest sum of RSS over the process tree
(psutil, sampled every 20 ms). After the last size, 1% new sessions are added and our incremental
second backup is timed against the last full one. Results go to stdout and
``benchmarks/results/recordings-<timestamp>.json``.

At each size, after the backups, each side's newest backup is restored, alternating
``--repeat`` times: ours ``run_recordings_restore`` into an empty directory (every file's sha256
checked) in a child process, the shell ``age -d | zstd -d | tar -x`` under GNU time
(benchmarks/README.md, issue 4).

Usage: .venv/bin/python benchmarks/recordings_backup.py --sizes 256 1024
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backup_restore import (  # a script next to this one
    MAX_RSS_MIB,
    MIN_THROUGHPUT_RATIO,
    BenchError,
    Run,
    alternate,
    log,
    measured,
    ours_run,
    print_checks,
    run_command,
    shell_run,
    stop_on_sigterm,
    summarize,
    verdicts,
    write_results,
)
from backup_restore import table as restore_table

from siprec_backup.lab.recordings import compressed_audio_bytes, wav_bytes

MIB = 1 << 20
DEFAULT_DIR = Path("/var/tmp/siprec-bench-recordings")
XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1">\n'
    "  <datamode>complete</datamode>\n"
    '  <group group_id="{g}"><associate-time>2026-11-26T10:00:00Z</associate-time></group>\n'
    '  <session session_id="{u}"><sipSessionID>{s};remote={r}</sipSessionID></session>\n'
    '  <participant participant_id="{u}-a"><nameID aor="sip:+1555{n:07d}@pstn.example.com">'
    '<name xml:lang="en">Caller {n}</name></nameID></participant>\n'
    '  <participant participant_id="{u}-b"><nameID aor="sip:agent{a:04d}@cc.example.com">'
    '<name xml:lang="en">Agent {a}</name></nameID></participant>\n'
    '  <stream stream_id="{u}-1" session_id="{u}"><label>1</label></stream>\n'
    '  <stream stream_id="{u}-2" session_id="{u}"><label>2</label></stream>\n'
    '  <sessionrecordingassoc session_id="{u}"/>\n'
    '  <participantstreamassoc participant_id="{u}-a"><send>{u}-1</send><recv>{u}-2</recv>'
    "</participantstreamassoc>\n"
    "</recording>\n"
)


def write_sessions(root: Path, first: int, total_bytes: int, seed: int) -> tuple[int, int]:
    """Write sessions numbered from `first` until `total_bytes`; (files, bytes) written."""
    rng = random.Random(seed)
    files = written = 0
    n = first
    while written < total_bytes:
        uuid = f"{n:08x}-{rng.getrandbits(16):04x}-4000-8000-{rng.getrandbits(48):012x}"
        day = root / "recordings" / "2026" / "11" / f"{1 + n % 28:02d}"
        day.mkdir(parents=True, exist_ok=True)
        wav = wav_bytes(rng.randrange(256 << 10, 2 << 20), rng)
        opus = compressed_audio_bytes(max(64 << 10, int(len(wav) * 0.36)), rng, "opus")
        xml = XML.format(
            g=rng.getrandbits(64),
            u=uuid,
            s=rng.getrandbits(64),
            r=rng.getrandbits(64),
            n=n,
            a=n % 2000,
        ).encode()
        for name, data in ((f"{uuid}.xml", xml), (f"{uuid}-1.wav", wav), (f"{uuid}-2.opus", opus)):
            (day / name).write_bytes(data)
            written += len(data)
            files += 1
        n += 1
    return files, written


def tree_stats(root: Path) -> dict[str, int]:
    stats = {"files": 0, "bytes": 0, "wav_bytes": 0, "opus_bytes": 0, "xml_bytes": 0}
    for path in root.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            stats["files"] += 1
            stats["bytes"] += size
            kind = f"{path.suffix.lstrip('.')}_bytes"
            stats[kind] = stats.get(kind, 0) + size
    return stats


def measure(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run `args`; (seconds, peak RSS MiB of the process tree, stdout)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-out-{os.getpid()}"
    with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        peak = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            try:
                parent = psutil.Process(proc.pid)
            except psutil.NoSuchProcess:
                return
            while not stop.is_set():
                try:
                    procs = [parent, *parent.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in procs)
                except psutil.NoSuchProcess:
                    rss = 0
                peak = max(peak, rss / MIB)
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
    stdout = out_path.read_text()
    errors = Path(str(out_path) + ".err").read_text()
    out_path.unlink()
    Path(str(out_path) + ".err").unlink()
    if code != 0:
        raise BenchError(f"{args[0]} failed (exit {code}):\n{errors[-2000:]}")
    return seconds, peak, stdout


def write_params(params_file: Path, root: Path, store: Path, key: Any, **extra: str) -> None:
    """The child's parameters, the key included: a file readable by us only, not argv."""
    params = {"root": str(root), "store": str(store), "key_id": key.key_id, **extra}
    params["key_hex"] = key.material.hex()
    params_file.write_text(json.dumps(params))
    params_file.chmod(0o600)


def child(params_file: str) -> None:
    """One run of our engine (the child process): prints the manifest's facts as JSON."""
    from siprec_backup.recordings import run_recordings_backup
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey

    params = json.loads(Path(params_file).read_text())
    key = MasterKey(params["key_id"], bytes.fromhex(params["key_hex"]))
    t0 = time.perf_counter()
    manifest = run_recordings_backup(
        Path(params["root"]), LocalStore(params["store"]), key, cluster="bench", source_name="rec"
    )
    print(
        json.dumps(
            {
                "engine_seconds": time.perf_counter() - t0,
                "stored_bytes": manifest.stored_bytes,
                "source_info": {
                    k: v for k, v in manifest.source_info.items() if k != "compressed_extensions"
                },
            }
        )
    )


def child_restore(params_file: str) -> None:
    """One restore of the newest backup in the store (the child process), every file's sha256
    checked; prints what ``measured`` reports as JSON."""
    from siprec_backup.catalog import find_backup
    from siprec_backup.recordings import run_recordings_restore
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey

    params = json.loads(Path(params_file).read_text())
    key = MasterKey(params["key_id"], bytes.fromhex(params["key_hex"]))
    store = LocalStore(params["store"])
    manifest = find_backup(store, "", "bench", "rec")
    target = Path(params["root"])
    result, report = measured(
        params, lambda: run_recordings_restore(store, "", manifest, key, target)
    )
    print(json.dumps({"dump_bytes": result.plaintext_bytes, "tables": result.tables, **report}))


class Restores:
    """The restore step at one size: ours restores the newest backup in ``store`` into an empty
    directory, the shell extracts its own archive of the same tree with
    ``age -d | zstd -d | tar -x``."""

    def __init__(
        self,
        work: Path,
        identity: Path,
        key: Any,
        store: Path,
        archive: Path,
        stats: dict[str, int],
    ) -> None:
        self.work, self.identity, self.key, self.stats = work, identity, key, stats
        self.store, self.archive = store, archive

    def settle(self) -> None:
        """Same start for every run: the last run's files written back."""
        os.sync()

    def ours(self, n: int) -> Run:
        target = self.work / "restore-ours"
        shutil.rmtree(target, ignore_errors=True)
        params_file = self.work / "restore-params.json"
        no_tool = str(self.work / "none.time")  # measured() reads it; no external tool here
        write_params(params_file, target, self.store, self.key, tool_time_file=no_tool)
        try:
            wall, out = run_command(
                [sys.executable, __file__, "--child-restore", str(params_file)],
                what="our restore",
            )
        finally:
            shutil.rmtree(target, ignore_errors=True)
        r = json.loads(out)
        r["child_wall_seconds"] = wall
        return ours_run(r)

    def shell(self, n: int) -> Run:
        target = self.work / "restore-shell"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        pipeline = (
            f"age -d -i {shlex.quote(str(self.identity))} {shlex.quote(str(self.archive))} | "
            f"zstd -d -q -c | tar -xf - -C {shlex.quote(str(target))}"
        )
        try:
            run = shell_run(pipeline, "shell restore", self.work / "shell.time")
            got = tree_stats(target)  # a sanity check, not timed
            if (got["files"], got["bytes"]) != (self.stats["files"], self.stats["bytes"]):
                raise BenchError(f"shell restore: {got} differs from the tree's {self.stats}")
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="MiB")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-restore", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if args.child_restore:
        child_restore(args.child_restore)
        return 0
    for tool in ("tar", "zstd", "age", "age-keygen"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install -y {tool})")

    stop_on_sigterm()
    started = datetime.now(UTC)
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        report = run_all(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(report["sizes"], report["incremental"]))
    print("\nrestore (age -d | zstd -d | tar -x; ours: every file's sha256 checked)")
    print(report["restore_table"])
    ok = print_checks(verdicts(report["restore"], flat="restore"))
    log(f"results: {write_results('recordings', started, report)}")
    return 0 if ok else 1


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every measurement, in ``work``: per size the backups, then the restores of the newest
    backup of each side; at the end the incremental backup. The JSON report."""
    from siprec_backup.stream import MasterKey

    identity = work / "age.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    key = MasterKey.generate("bench")
    params_file = work / "params.json"
    root = work / "spool"
    archive = work / "shell.tar.zst.age"
    results: list[dict[str, Any]] = []
    restores: list[dict[str, Any]] = []
    restore_runs: dict[str, list[dict[str, Any]]] = {}
    written = 0
    for seed, size in enumerate(sorted(args.sizes)):
        log(f"writing the spool up to {size} MiB")
        _, added = write_sessions(root, 10_000_000 + seed * 1_000_000, size * MIB - written, seed)
        written += added
        stats = tree_stats(root)
        ours: list[dict[str, Any]] = []
        shell: list[dict[str, Any]] = []
        for i in range(args.repeat):
            for side in ("ours", "shell") if i % 2 == 0 else ("shell", "ours"):
                if side == "ours":
                    store = work / f"store-{size}-{i}"
                    shutil.rmtree(store, ignore_errors=True)
                    write_params(params_file, root, store, key)
                    secs, rss, out = measure(
                        [sys.executable, __file__, "--child", str(params_file)]
                    )
                    facts = json.loads(out)
                    ours.append({"seconds": secs, "rss_mib": rss, **facts})
                else:  # the newest archive stays for the restore step
                    cmd = f"tar -cf - -C {root} . | zstd -3 -q | age -r {recipient} > {archive}"
                    secs, rss, _ = measure(["bash", "-o", "pipefail", "-c", cmd])
                    shell.append(
                        {"seconds": secs, "rss_mib": rss, "stored_bytes": archive.stat().st_size}
                    )
                log(f"{size} MiB {side}: {secs:.2f} s, peak RSS {rss:.1f} MiB")
        results.append(summary(size, stats, ours, shell))
        for i in range(args.repeat - 1):  # keep the last store for the restores and incremental
            shutil.rmtree(work / f"store-{size}-{i}", ignore_errors=True)
        step = f"restore {stats['bytes'] / MIB:.0f} MiB"
        last_store = work / f"store-{size}-{args.repeat - 1}"
        bench = Restores(work, identity, key, last_store, archive, stats)
        r = alternate(step, bench.ours, bench.shell, args.repeat, bench.settle)
        restore_runs[step] = [asdict(x) for x in r]
        restores.append({**summarize(step, stats["bytes"], r), "tool": "-"})
        archive.unlink()
    # Incremental: 1% new content, our second backup against the last full one.
    last = sorted(args.sizes)[-1]
    store = work / f"store-{last}-{args.repeat - 1}"
    _, added = write_sessions(root, 90_000_000, written // 100, 99)
    write_params(params_file, root, store, key)
    secs, rss, out = measure([sys.executable, __file__, "--child", str(params_file)])
    facts = json.loads(out)
    incremental = {"added_bytes": added, "seconds": secs, "rss_mib": rss, **facts}
    log(f"incremental after +{added / MIB:.1f} MiB: {secs:.2f} s")
    checks = verdicts(restores, flat="restore")
    return {
        "sizes": results,
        "incremental": incremental,
        "host_cpus": os.cpu_count(),
        "restore": restores,
        "restore_targets": [{"target": t, "met": ok} for t, ok in checks],
        "restore_runs": restore_runs,
        "restore_table": restore_table(restores, sizes=("tree MB", "files MB")),
    }


def summary(
    size: int, stats: dict[str, int], ours: list[dict[str, Any]], shell: list[dict[str, Any]]
) -> dict[str, Any]:
    def best(runs: list[dict[str, Any]]) -> float:
        return float(min(r["seconds"] for r in runs))

    mb = stats["bytes"] / 1e6
    return {
        "size_mib": size,
        "tree": stats,
        "ours": ours,
        "shell": shell,
        "ours_mb_s": mb / best(ours),
        "shell_mb_s": mb / best(shell),
        "ratio": best(shell) / best(ours),
        "ours_rss_mib": max(r["rss_mib"] for r in ours),
        "shell_rss_mib": max(r["rss_mib"] for r in shell),
        "ours_stored": statistics.median(r["stored_bytes"] for r in ours),
        "shell_stored": statistics.median(r["stored_bytes"] for r in shell),
    }


def table(results: list[dict[str, Any]], incremental: dict[str, Any]) -> str:
    lines = [
        "| tree | files | ours MB/s | tar+zstd+age MB/s | ratio | ours RSS MiB | shell RSS MiB "
        "| ours stored MB | shell stored MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['tree']['bytes'] / MIB:.0f} MiB | {r['tree']['files']} | {r['ours_mb_s']:.0f} "
            f"| {r['shell_mb_s']:.0f} | {r['ratio']:.2f}x "
            f"{'ok' if r['ratio'] >= MIN_THROUGHPUT_RATIO else 'BELOW'} "
            f"| {r['ours_rss_mib']:.0f} {'ok' if r['ours_rss_mib'] < MAX_RSS_MIB else 'OVER'} "
            f"| {r['shell_rss_mib']:.0f} | {r['ours_stored'] / 1e6:.0f} "
            f"| {r['shell_stored'] / 1e6:.0f} |"
        )
    full = min(x["seconds"] for x in results[-1]["ours"])
    info = incremental["source_info"]
    lines.append(
        f"\nincremental (+{incremental['added_bytes'] / MIB:.1f} MiB, {info['files_new']} new "
        f"files, {info['files_reused']} reused): {incremental['seconds']:.2f} s vs full "
        f"{full:.2f} s; stored {incremental['stored_bytes'] / 1e6:.1f} MB; peak RSS "
        f"{incremental['rss_mib']:.0f} MiB"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
