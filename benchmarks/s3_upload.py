"""Benchmark: our backup into S3 next to ``zstd -3 | age | boto3 upload_fileobj``, through moto.

The data is a file of realistic, compressible SIPREC-like text (call metadata rows with random
ids), made once per size. For each size both sides upload the same file to a moto server started
by the benchmark (in memory, on a free loopback port):

* ours:  a child Python process runs ``run_backup`` (file -> sha256 -> zstd 3 -> AES-256-GCM ->
  ``S3Store`` multipart upload, at most 2 parts in flight);
* shell: ``zstd -3 -c FILE | age -r RECIPIENT | python -c <boto3 upload_fileobj from stdin>``
  (boto3's default transfer: 8 MiB parts, 10 threads).

Reported: wall time, throughput (source MB/s) and the peak RSS of every process of each side
(``wait4``). Running two sizes shows that our memory does not grow with the data.

Usage: .venv/bin/python benchmarks/s3_upload.py --sizes 256,1024
"""

from __future__ import annotations

import argparse
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20

OURS = textwrap.dedent(
    """
    import contextlib, sys
    from dataclasses import dataclass
    from siprec_backup.backup import run_backup
    from siprec_backup.storage import S3Store
    from siprec_backup.sources.base import DumpFacts
    from siprec_backup.stream import MasterKey

    path, endpoint, bucket = sys.argv[1:4]

    @dataclass
    class Dump:
        stream: object
        def finish(self):
            return DumpFacts()

    class FileSource:
        kind = "file"
        def describe(self): return path
        def estimate_bytes(self): return None
        @contextlib.contextmanager
        def open_dump(self):
            with open(path, "rb", buffering=0) as f:
                yield Dump(f)

    store = S3Store(bucket, endpoint_url=endpoint, region="us-east-1",
                    aws_access_key_id="testing", aws_secret_access_key="testing")
    run_backup(FileSource(), store, MasterKey.generate("bench"),
               cluster="bench", source_name="file")
    """
)

UPLOADER = textwrap.dedent(
    """
    import sys, boto3
    endpoint, bucket, key = sys.argv[1:4]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.upload_fileobj(sys.stdin.buffer, bucket, key)
    """
)

WORDS = [
    "call",
    "leg",
    "sip",
    "invite",
    "bye",
    "ack",
    "recording",
    "stream",
    "codec",
    "opus",
    "pcmu",
    "siprec",
    "agent",
    "queue",
]


def make_file(path: Path, size: int) -> None:
    """Write `size` bytes of call-metadata-like CSV (compresses about 3-5x with zstd -3)."""
    rng = random.Random(42)
    with path.open("wb") as f:
        written = 0
        while written < size:
            rows = []
            for _ in range(2000):
                rows.append(
                    f"{rng.getrandbits(64):016x},{rng.randint(1, 9999)},"
                    f"sip:+1{rng.randint(2000000000, 9999999999)}@example.test,"
                    f"{' '.join(rng.choices(WORDS, k=6))},{rng.random():.6f}\n"
                )
            block = "".join(rows).encode()[: size - written]
            f.write(block)
            written += len(block)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hwm_mib(pid: int) -> float | None:
    """Peak RSS since exec (VmHWM) of a running process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_all(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """Wait for every process, sampling each one's VmHWM every 20 ms (``wait4``'s ru_maxrss
    would include the forked parent's memory before exec); peak RSS in MiB by program name."""
    names = {}
    for proc in procs:
        args = proc.args if isinstance(proc.args, list) else [proc.args]
        name = Path(str(args[0])).name
        names[proc.pid] = "python" if name.startswith("python") else name
    peaks = dict.fromkeys(names.values(), 0.0)
    running = list(procs)
    while running:
        for proc in list(running):
            hwm = _hwm_mib(proc.pid)
            if hwm is not None:
                peaks[names[proc.pid]] = max(peaks[names[proc.pid]], hwm)
            if proc.poll() is not None:
                running.remove(proc)
                if proc.returncode != 0:
                    raise SystemExit(f"{proc.args!r} failed with {proc.returncode}")
        time.sleep(0.02)
    return peaks


def run_ours(path: Path, endpoint: str) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-c", OURS, str(path), endpoint, "bench"], cwd=ROOT)
    return wait_all([proc])


def run_shell(path: Path, endpoint: str, recipient: str, key: str) -> dict[str, float]:
    zstd = subprocess.Popen(["zstd", "-3", "-q", "-c", str(path)], stdout=subprocess.PIPE)
    age = subprocess.Popen(["age", "-r", recipient], stdin=zstd.stdout, stdout=subprocess.PIPE)
    assert zstd.stdout is not None and age.stdout is not None
    zstd.stdout.close()
    up = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, endpoint, "bench", key], stdin=age.stdout
    )
    age.stdout.close()
    return wait_all([zstd, age, up])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024", help="data sizes in MiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="siprec-s3-bench-", dir="/var/tmp"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (work / "moto.log").open("wb") as log:
        moto = subprocess.Popen(
            [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        sys.path.insert(0, str(ROOT))
        from siprec_backup.lab.object_stores import answers_http, lab_s3_store

        while not answers_http(endpoint):
            time.sleep(0.1)
        s3 = lab_s3_store(endpoint, "bench")
        s3.client.create_bucket(Bucket="bench")
        identity = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
        recipient = next(
            line.split(": ")[1] for line in identity.splitlines() if "public key" in line
        )
        print(f"{'size':>6} {'side':>5} {'seconds':>8} {'MB/s':>7}  peak RSS (MiB)")
        for size in sizes:
            data = work / f"data-{size}.csv"
            make_file(data, size * MiB)
            for i in range(args.repeat):
                sides = ["ours", "shell"]
                if i % 2:
                    sides.reverse()
                for side in sides:
                    for info in list(s3.list()):  # keep moto's memory small
                        s3.delete(info.key)
                    t0 = time.monotonic()
                    if side == "ours":
                        peaks = run_ours(data, endpoint)
                    else:
                        peaks = run_shell(data, endpoint, recipient, f"shell/{size}/{i}")
                    secs = time.monotonic() - t0
                    rss = ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items()))
                    print(
                        f"{size:>5}M {side:>5} {secs:8.2f} {size * MiB / secs / 1e6:7.1f}  {rss}",
                        flush=True,
                    )
            data.unlink()
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
