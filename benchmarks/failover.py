"""Benchmark: failover, planned switchover and rollback on the lab, triggered through the
Prefect API as the UI's "Custom run" does, side by side with Redis Sentinel.

Starts a lab with the Prefect server and worker, BIND primary + secondary and sshd, registers
the deployments (``prefect deploy``) and the lever blocks, then per kind (PostgreSQL, MariaDB,
Redis), ``--runs`` times, each on a fresh three-node cluster behind its own HAProxy:

* failover: n1 killed, then at T0 a flow run of ``failover/on-demand`` is created through the
  API; threads poll every 20 ms from T0 for the first write accepted by n2 or n3 directly
  (writable), the first write through HAProxy that lands on another node than n1 (LB), and both
  BIND servers answering the record with the new primary's address (DNS). The run's
  ``start_time`` splits the run start latency (worker polling + subprocess start) from the work;
* switchover: an application writer through HAProxy while ``switchover/on-demand`` runs; the
  write gap (longest time between two acknowledged writes), trigger -> n2 writable, and every
  acknowledged write checked on n2 (lost writes must be 0);
* rollback: a failover whose DNS zone block has a wrong TSIG secret: from the failing step's end
  to the end of the rollbacks (audit trail), trigger -> final state, old primary writable again.

Each is measured through the lab's worker (path ``lab``: pool ``siprec-backup``, polls every
2 s) and through two faster start paths made here only (copies of the two deployments,
``*/on-demand-<path>``): ``fast``, a second process worker on pool ``siprec-failover`` polling
every ``--fast-query-seconds`` (failover only by default), and ``warm``, a small runner on pool
``siprec-failover-warm`` that hands each run to a spare process which has already imported
Prefect and the flows. Redis Sentinel (3 sentinels, quorum 2, down-after 1000 ms) on a fresh
Redis cluster: n1 killed -> a replica accepts writes. Results: see benchmarks/README.md.
Usage:

    .venv/bin/python benchmarks/failover.py --runs 3 --json /tmp/failover.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import redis
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blocks.dns import BindDnsZone  # noqa: E402
from blocks.failover import FailoverCluster  # noqa: E402
from blocks.loading import load_block  # noqa: E402
from deployments.demo import register_deployments  # noqa: E402
from deployments.lab_blocks import LEVERS, save_lever_blocks  # noqa: E402
from deployments.lab_failover import KINDS, RunningCluster, running_cluster  # noqa: E402
from flows.failover import artifact_key  # noqa: E402
from siprec_backup.lab import Lab, LabState, _process  # noqa: E402
from siprec_backup.lab.cluster_redis import RedisLabCluster  # noqa: E402
from siprec_backup.lab.lab import SERVICES  # noqa: E402
from siprec_backup.lab.probes import Writer, bind_answers, markers, write  # noqa: E402
from siprec_backup.lab.redis import find_redis_server  # noqa: E402

WANTED = {"prefect-server", "prefect-worker", "bind-primary", "bind-secondary", "sshd"}
POLL = 0.02
#: Bound of every wait for a flow run or a probe.
RUN_DEADLINE = 180.0
PROBE_DEADLINE = 90.0
FAST_POOL = "siprec-failover"
WARM_POOL = "siprec-failover-warm"
#: Pool of each path besides the lab's worker.
POOLS = {"fast": FAST_POOL, "warm": WARM_POOL}
FLOWS = ("failover", "switchover")
BAD_TSIG = "c2VjcmV0LXRoYXQtaXMtd3Jvbmc="  # valid base64, not the zone's key

#: Reference figures quoted by issue 7 (not measured here).
REFERENCE = {
    "Patroni 4.1.5 planned switchover, to writable (s)": 3.1,
    "Patroni 4.1.5 planned switchover, write gap (s)": 2.4,
    "Patroni 4.1.5 failover (s)": "20-28",
    "Redis Sentinel, down-after 1 s (s)": 2.25,
}
#: Issue 7's targets: metric -> limit in seconds (lost writes: count).
TARGETS = {
    "switchover_gap": 2.4,
    "writable": 5.0,
    "lb": 10.0,
    "dns": 10.0,
    "fenced": 10.0,
    "rollback_final": 10.0,
    "lost": 0,
}
LABELS = {
    "writable": "failover: trigger -> new primary writable",
    "lb": "failover: trigger -> LB switched",
    "dns": "failover: trigger -> DNS verified (both)",
    "start": "failover: run start latency",
    "pickup": "  of which: trigger -> worker took it",
    "spawn": "  of which: flow process start",
    "flow": "failover: flow run (start -> end)",
    "switchover_gap": "switchover: write gap",
    "switchover_writable": "switchover: trigger -> n2 writable",
    "switchover_start": "switchover: run start latency",
    "lost": "switchover: lost writes",
    "rollback": "rollback: failed step end -> end (audit)",
    "fenced": "rollback: n1 refuses -> accepts writes again",
    "rollback_final": "rollback: trigger -> final state",
    "sentinel": "sentinel: kill -> replica writable",
}


# -- a fresh cluster with its HAProxy and blocks, and probes ------------------------------------


@contextlib.contextmanager
def fresh_cluster(state: LabState, kind: str, *, ssh: bool = False) -> Iterator[RunningCluster]:
    """A new cluster of ``kind`` with HAProxy, DNS record and blocks; stopped and removed
    afterwards. ``ssh``: as a PostgreSQL switchover needs (see running_cluster)."""
    root = Path(tempfile.mkdtemp(prefix=f"siprec-bench-fo-{kind}-"))
    root.chmod(0o711)  # the postgres and mysql accounts traverse it to their data
    name = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    try:
        with running_cluster(state, kind, root, name, ssh=ssh) as run:
            yield run
    finally:
        shutil.rmtree(root, ignore_errors=True)


class FirstSuccess:
    """A thread calling ``probe`` every 20 ms from ``t0`` until it returns True (exceptions
    count as False); ``seconds``: from ``t0`` to the end of the first successful call."""

    def __init__(self, probe: Callable[[], bool], t0: float) -> None:
        self.probe = probe
        self.t0 = t0
        self.at: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        deadline = self.t0 + PROBE_DEADLINE
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                ok = self.probe()
            except Exception:
                ok = False
            if ok:
                self.at = time.monotonic()
                return
            self.stop.wait(POLL)

    def result(self, grace: float) -> float | None:
        """Wait up to ``grace`` s more for a success, then stop; seconds from t0, or None."""
        self.thread.join(grace)
        self.stop.set()
        self.thread.join(5)
        return None if self.at is None else round(self.at - self.t0, 3)


def writable_probe(kind: str, targets: dict[str, Any]) -> Callable[[], bool]:
    """True once one of ``targets`` (node -> connection) accepts a write."""
    counter = itertools.count()

    def probe() -> bool:
        for node, target in targets.items():
            with contextlib.suppress(Exception):
                write(kind, target, f"p-{node}-{next(counter)}")
                return True
        return False

    return probe


def lb_probe(run: RunningCluster) -> Callable[[], bool]:
    """True once a write through HAProxy's frontend lands on another node than n1."""
    target = run.frontend()
    n1 = run.cluster.node("n1")
    counter = itertools.count()

    def probe() -> bool:
        served = write(run.kind, target, f"lb-{next(counter)}")
        return served != (n1.host, n1.port)

    return probe


def dns_probe(
    state: LabState, run: RunningCluster, candidates: tuple[str, ...]
) -> Callable[[], bool]:
    """True once both BIND servers answer the record with one candidate's address only."""
    record = run.blocks.dns_record
    assert record is not None
    wanted = [{run.cluster.node(n).host} for n in candidates]

    def probe() -> bool:
        answers = bind_answers(state, record, timeout=1)
        primary, secondary = answers["primary"][0], answers["secondary"][0]
        return primary == secondary and primary in wanted

    return probe


class FencedWindow:
    """A thread inserting on n1 directly every 20 ms (rolled back: no replica lag): how long n1
    refused writes (the fence of a failover that is then rolled back), from the first refusal to
    the next accepted write."""

    def __init__(self, run: RunningCluster) -> None:
        self.run = run
        self.refused: float | None = None
        self.back: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        deadline = time.monotonic() + PROBE_DEADLINE
        target = self.run.app_target("n1")
        for i in itertools.count():
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                write(self.run.kind, target, f"f-{i}", commit=False)
                if self.refused is not None:
                    self.back = time.monotonic()
                    return
            except Exception:
                if self.refused is None:
                    self.refused = time.monotonic()
            self.stop.wait(POLL)

    def result(self, grace: float) -> float | None:
        """Seconds n1 refused writes (None: never refused, or not back in time)."""
        self.thread.join(grace)
        self.stop.set()
        self.thread.join(5)
        if self.refused is None or self.back is None:
            return None
        return round(self.back - self.refused, 3)


# -- Prefect ----------------------------------------------------------------------------------


@dataclass
class Deployments:
    """Deployment ids per path (``lab``, ``fast``) and flow (``failover``, ``switchover``)."""

    ids: dict[str, dict[str, UUID]] = field(default_factory=dict)


@dataclass
class Triggered:
    """A flow run created at ``t0`` (monotonic) / ``wall0`` (epoch), once it reached its final
    state: its state name, start and end as seconds after the trigger."""

    run_id: UUID
    t0: float
    wall0: float
    state: str = ""
    message: str = ""
    pending: float | None = None
    start: float | None = None
    end: float | None = None


def trigger(client: SyncPrefectClient, deployment: UUID, request: dict[str, Any]) -> Triggered:
    """Create a flow run of ``deployment`` now, as the UI's "Custom run" does."""
    t0, wall0 = time.monotonic(), time.time()
    run = client.create_flow_run_from_deployment(deployment, parameters={"request": request})
    return Triggered(run.id, t0, wall0)


def wait_final(client: SyncPrefectClient, triggered: Triggered) -> Triggered:
    """Poll the run until its state is final (bounded); fill in state, start and end."""
    deadline = time.monotonic() + RUN_DEADLINE
    while True:
        run = client.read_flow_run(triggered.run_id)
        if run.state is not None and run.state.is_final():
            break
        if time.monotonic() > deadline:
            triggered.state = "TIMEOUT"
            return triggered
        time.sleep(0.1)
    triggered.state = str(run.state.name) if run.state else "?"
    triggered.message = (run.state.message or "") if run.state else ""
    pending = [st for st in client.read_flow_run_states(triggered.run_id) if st.is_pending()]
    if pending:  # the worker took the run and starts its process
        triggered.pending = round(pending[0].timestamp.timestamp() - triggered.wall0, 3)
    if run.start_time is not None:
        triggered.start = round(run.start_time.timestamp() - triggered.wall0, 3)
    if run.end_time is not None:
        triggered.end = round(run.end_time.timestamp() - triggered.wall0, 3)
    return triggered


def audit_of(client: SyncPrefectClient, mode: str, cluster: str) -> dict[str, Any]:
    """The audit trail the run published (the JSON block of artifact ``<mode>-<cluster>``)."""
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(mode, cluster)])),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    if not found or not isinstance(found[0].data, str):
        return {}
    markdown = found[0].data
    return dict(json.loads(markdown.split("```json\n", 1)[1].split("\n```", 1)[0]))


def deployment_ids(client: SyncPrefectClient, paths: list[str]) -> Deployments:
    """The registered deployments; for the paths ``fast`` and ``warm``, copies of them on the
    path's pool (named ``<deployment>-<path>``)."""
    found = Deployments({})
    for path in paths:
        found.ids[path] = {}
        for flow in FLOWS:
            d = client.read_deployment_by_name(f"{flow}/on-demand")
            if path == "lab":
                found.ids[path][flow] = d.id
                continue
            found.ids[path][flow] = client.create_deployment(
                flow_id=d.flow_id,
                name=f"{d.name}-{path}",
                description=d.description,
                parameters=d.parameters,
                work_pool_name=POOLS[path],
                work_queue_name="default",
                tags=list(d.tags),
                path=d.path,
                entrypoint=d.entrypoint,
                parameter_openapi_schema=d.parameter_openapi_schema,
                pull_steps=d.pull_steps,
                job_variables=d.job_variables,
            )
    return found


def _worker_online(api_url: str, pool: str) -> bool:
    try:
        r = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={}, timeout=2.0)
        return r.status_code == 200 and any(w.get("status") == "ONLINE" for w in r.json())
    except (httpx.HTTPError, ValueError):
        return False


@contextlib.contextmanager
def fast_worker(state: LabState, query_seconds: float) -> Iterator[None]:
    """A second process worker on pool siprec-failover polling every ``query_seconds``
    (it creates the pool), run from the project directory like the lab's; stopped afterwards."""
    api_url = state.prefect_api_url
    home = state.root / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS=str(query_seconds),
        PYTHONUNBUFFERED="1",
    )
    prefect = Path(sys.executable).with_name("prefect")
    argv: list[str | Path] = [prefect, "worker", "start", "--pool", FAST_POOL, "--type", "process"]
    argv += ["--name", "siprec-bench-failover-worker"]
    proc = _process.spawn(argv, log=state.root / "logs" / "fast-worker.log", env=env, cwd=ROOT)
    ticks = _process.start_ticks(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while not _worker_online(api_url, FAST_POOL):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fast worker did not come online (see fast-worker.log)")
            time.sleep(0.2)
        yield
    finally:
        _process.stop_process(proc.pid, ticks, sig=signal.SIGTERM, group=True, timeout=20)
        with contextlib.suppress(Exception):
            proc.wait(5)


#: The "warm" path's runner (argv: api_url, pool, poll_s, python). It keeps one spare flow
#: process that has already imported Prefect and the flows and waits on stdin; a scheduled run
#: of the pool is claimed (Pending), its id handed to the spare, and a new spare started.
_WARM = """\
import datetime, subprocess, sys, time
import httpx
api, pool, poll, python = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
CHILD = '''
import sys
from uuid import UUID
from prefect.flow_engine import load_flow, load_flow_run, run_flow
import flows.failover, flows.switchover
line = sys.stdin.readline().strip()
if line:
    run = load_flow_run(UUID(line))
    run_flow(load_flow(run), flow_run=run)
'''
def spare():
    return subprocess.Popen([python, '-c', CHILD], stdin=subprocess.PIPE, text=True)
http = httpx.Client(base_url=api, timeout=5)
http.post('/work_pools/', json={'name': pool, 'type': 'process'})
child, busy = spare(), []
while True:
    busy = [p for p in busy if p.poll() is None]
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    try:
        found = http.post(f'/work_pools/{pool}/get_scheduled_flow_runs',
                          json={'scheduled_before': soon.isoformat(), 'limit': 5}).json()
    except (httpx.HTTPError, ValueError):
        found = []
    for item in found:
        run_id = item['flow_run']['id']
        claim = http.post(f'/flow_runs/{run_id}/set_state',
                          json={'state': {'type': 'PENDING', 'name': 'Pending'}})
        if claim.status_code >= 300 or claim.json().get('status') != 'ACCEPT':
            continue
        child.stdin.write(run_id + '\\n')
        child.stdin.close()
        busy.append(child)
        child = spare()
    time.sleep(poll)
"""


@contextlib.contextmanager
def warm_runner(state: LabState, poll_seconds: float) -> Iterator[None]:
    """The "warm" path: :data:`_WARM` on pool siprec-failover-warm (it creates the pool),
    run from the project directory; stopped (with its spare and runs) afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(state.root / "prefect"),
        PREFECT_API_URL=state.prefect_api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    argv = [sys.executable, "-c", _WARM, state.prefect_api_url, WARM_POOL, str(poll_seconds)]
    argv.append(sys.executable)
    log = state.root / "logs" / "warm-runner.log"
    proc = _process.spawn(argv, log=log, env=env, cwd=ROOT)
    ticks = _process.start_ticks(proc.pid)
    try:
        deadline = time.monotonic() + 60
        while not _pool_exists(state.prefect_api_url, WARM_POOL):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the warm runner did not start (see {log})")
            time.sleep(0.2)
        time.sleep(5.0)  # its first spare imports Prefect and the flows
        yield
    finally:
        _process.stop_process(proc.pid, ticks, sig=signal.SIGTERM, group=True, timeout=20)
        with contextlib.suppress(Exception):
            proc.wait(5)


def _pool_exists(api_url: str, pool: str) -> bool:
    try:
        return httpx.get(f"{api_url}/work_pools/{pool}", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


# -- the three scenarios ----------------------------------------------------------------------


def failover_run(
    client: SyncPrefectClient, state: LabState, deployment: UUID, kind: str
) -> dict[str, Any]:
    """n1 killed, failover triggered: writable, LB, DNS, run start latency."""
    with fresh_cluster(state, kind) as run:
        run.cluster.kill("n1")
        candidates = ("n2", "n3")
        request = {"cluster": run.blocks.failover, "reason": "benchmark", "dry_run": False}
        t0 = time.monotonic()
        probes = {
            "writable": FirstSuccess(
                writable_probe(kind, {n: run.app_target(n) for n in candidates}), t0
            ),
            "lb": FirstSuccess(lb_probe(run), t0),
            "dns": FirstSuccess(dns_probe(state, run, candidates), t0),
        }
        triggered = trigger(client, deployment, request)
        triggered.t0 = t0
        wait_final(client, triggered)
        grace = 10.0 if triggered.state == "Completed" else 0.0
        result: dict[str, Any] = {k: p.result(grace) for k, p in probes.items()}
        audit = audit_of(client, "failover", run.blocks.failover)
        result.update(
            state=triggered.state,
            pickup=triggered.pending,
            spawn=_minus(triggered.start, triggered.pending),
            start=triggered.start,
            flow=_minus(triggered.end, triggered.start),
            end=triggered.end,
            promoted=audit.get("promoted"),
        )
        if triggered.state != "Completed":
            result["error"] = triggered.message[:300]
        return result


def switchover_run(
    client: SyncPrefectClient, state: LabState, deployment: UUID, kind: str
) -> dict[str, Any]:
    """An application writing through HAProxy while n1 hands over to n2: gap, writable, RPO."""
    with (
        fresh_cluster(state, kind, ssh=kind == "postgres") as run,
        Writer(kind, run.frontend()) as writer,
    ):
        time.sleep(1.0)
        request = {
            "cluster": run.blocks.failover,
            "reason": "benchmark",
            "candidate": "n2",
            "dry_run": False,
        }
        t0 = time.monotonic()
        writable = FirstSuccess(writable_probe(kind, {"n2": run.app_target("n2")}), t0)
        triggered = trigger(client, deployment, request)
        triggered.t0 = t0
        wait_final(client, triggered)
        ok = triggered.state == "Completed"
        result: dict[str, Any] = {"switchover_writable": writable.result(10.0 if ok else 0.0)}
        if ok:
            run.haproxy.wait_serving(run.blocks.backend, "n2", timeout=10.0)
        time.sleep(1.0)
        writer.stop.set()
        writer.thread.join(10)
        acked = {marker for marker, _ in writer.acked}
        lost = len(acked - markers(kind, run.target("n2"), "w-")) if ok else None
        result.update(
            state=triggered.state,
            switchover_start=triggered.start,
            switchover_pickup=triggered.pending,
            switchover_gap=writer.longest_gap(),
            acked=len(acked),
            lost=lost,
        )
        if not ok:
            result["error"] = triggered.message[:300]
        return result


def rollback_run(
    client: SyncPrefectClient, state: LabState, deployment: UUID, kind: str
) -> dict[str, Any]:
    """A failover refused by DNS (wrong TSIG key) after fencing: time to roll everything back."""
    with fresh_cluster(state, kind) as run:
        name = run.blocks.failover
        good = load_block(BindDnsZone, LEVERS["dns"])
        bad = good.model_copy(update={"key_secret": SecretStr(BAD_TSIG)})
        bad.save(f"{name}-bad-dns", overwrite=True)
        block = load_block(FailoverCluster, name)
        block.dns_zone = f"{name}-bad-dns"
        block.save(name, overwrite=True)
        request = {"cluster": name, "reason": "benchmark", "candidate": "n2", "dry_run": False}
        window = FencedWindow(run)
        triggered = wait_final(client, trigger(client, deployment, request))
        fenced = window.result(10.0)
        audit = audit_of(client, "failover", name)
        failed = [s for s in audit.get("steps", []) if s.get("status") == "failed"]
        rollback = None
        if failed and audit.get("finished"):
            step = failed[-1]
            failed_end = _epoch(step["started"]) + float(step["seconds"])
            rollback = round(_epoch(audit["finished"]) - failed_end, 3)
        try:
            write(kind, run.app_target("n1"), "after-rollback")
            old_writable = True
        except Exception:
            old_writable = False
        return {
            "state": triggered.state,
            "outcome": audit.get("outcome"),
            "failed_step": failed[-1]["key"] if failed else None,
            "failed_step_seconds": failed[-1]["seconds"] if failed else None,
            "rollback": rollback,
            "fenced": fenced,
            "undone": len(audit.get("rollbacks", [])),
            "rollback_final": triggered.end,
            "old_primary_writable": old_writable,
        }


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


# -- Redis Sentinel ---------------------------------------------------------------------------


def _sentinel_config(port: int, primary: Any, directory: Path) -> str:
    return (
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {directory}\n"
        f"sentinel monitor bench {primary.host} {primary.port} 2\n"
        f"sentinel auth-pass bench {primary.password}\n"
        "sentinel down-after-milliseconds bench 1000\n"
        "sentinel failover-timeout bench 10000\n"
        "sentinel parallel-syncs bench 1\n"
    )


def _sentinels_ready(ports: list[int]) -> bool:
    """Every sentinel knows the 2 replicas and the 2 other sentinels."""
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as s:
            if len(s.execute_command("SENTINEL", "SENTINELS", "bench")) < 2:
                return False
            if len(s.execute_command("SENTINEL", "REPLICAS", "bench")) < 2:
                return False
    return True


def sentinel_run() -> float | None:
    """3 sentinels (quorum 2, down-after 1000 ms) on a fresh Redis cluster; n1 killed ->
    first write accepted by n2 or n3 (seconds)."""
    root = Path(tempfile.mkdtemp(prefix="siprec-bench-sentinel-"))  # 0700
    cluster = RedisLabCluster(root / "cluster")
    procs: list[tuple[int, int | None]] = []
    server = str(find_redis_server())
    try:
        cluster.start()
        primary = cluster.target("n1")
        ports = _process.free_ports(3)
        for i, port in enumerate(ports):
            d = root / f"sentinel-{i}"
            d.mkdir()
            conf = d / "sentinel.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(_sentinel_config(port, primary, d))
            proc = _process.spawn([server, conf, "--sentinel"], log=d / "sentinel.log", cwd=d)
            procs.append((proc.pid, _process.start_ticks(proc.pid)))
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.RedisError):
                if _sentinels_ready(ports):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels never discovered each other and the replicas")
            time.sleep(0.1)
        probe = writable_probe("redis", {n: cluster.target(n) for n in ("n2", "n3")})
        cluster.kill("n1")
        return FirstSuccess(probe, time.monotonic()).result(PROBE_DEADLINE)
    finally:
        for pid, ticks in procs:
            _process.stop_process(pid, ticks, sig=signal.SIGTERM, timeout=10)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- report -----------------------------------------------------------------------------------


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = _values(rows, key)
    missing = sum(1 for r in rows if not isinstance(r.get(key), int | float))
    if not values:
        return {"median": None, "max": None, "n": 0, "missing": missing, "measured": False}
    return {
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
        "missing": missing,
        "measured": True,
    }


def _cell(s: dict[str, Any], key: str) -> str:
    if s["median"] is None:
        return "-"
    fmt = "{:.0f}" if key == "lost" else "{:.2f}"
    text = f"{fmt.format(s['median'])} / {fmt.format(s['max'])}"
    return text + (f" ({s['missing']} missing)" if s["missing"] else "")


def scenario_of(key: str) -> str:
    """Which scenario measures ``key``."""
    if key.startswith("switchover") or key == "lost":
        return "switchover"
    if key.startswith("rollback") or key == "fenced":
        return "rollback"
    return "failover"


def verdict(key: str, s: dict[str, Any]) -> str:
    """PASS if every run measured the metric and its max is within the target."""
    limit = TARGETS[key]
    if s["median"] is None or s["missing"]:
        return "FAIL"
    ok = s["max"] <= limit if key == "lost" else s["max"] < limit
    return "PASS" if ok else "FAIL"


def report(results: dict[str, Any]) -> dict[str, Any]:
    """Print the table (median / max per metric, kind and path) and the verdicts."""
    summary: dict[str, Any] = {}
    groups = [
        (path, kind)
        for path in results["paths"]
        for kind in KINDS
        if kind in results["runs"].get(path, {})
    ]
    run = {scenario for chosen in results["scenarios"].values() for scenario in chosen}
    keys = [k for k in LABELS if k != "sentinel" and scenario_of(k) in run]
    header = f"{'metric (s; median / max)':<44}" + "".join(f"{p + ':' + k:>20}" for p, k in groups)
    print("\n" + header)
    for key in keys:
        line = f"{LABELS[key]:<44}"
        for path, kind in groups:
            if scenario_of(key) not in results["scenarios"][path]:
                line += f"{'n/a':>20}"
                continue
            rows = results["runs"][path][kind]
            s = summarize(rows, key)
            summary.setdefault(path, {}).setdefault(kind, {})[key] = s
            line += f" {_cell(s, key):>19}"
        print(line)
    sentinel = summarize([{"sentinel": v} for v in results["sentinel"]], "sentinel")
    summary["sentinel"] = sentinel
    print(f"{LABELS['sentinel']:<44}{_cell(sentinel, 'sentinel'):>20}   (redis-server --sentinel)")
    print("\nreference (issue), not measured here:")
    for label, value in REFERENCE.items():
        print(f"  {label:<52} {value}")
    print("\ntargets (issue 7), on the max of the runs:")
    verdicts = {}
    for path, kind in groups:
        for key, limit in TARGETS.items():
            if key not in summary[path][kind]:
                continue
            v = verdict(key, summary[path][kind][key])
            verdicts[f"{path}:{kind}:{key}"] = v
            shown = summary[path][kind][key]["max"]
            bound = f"{'=' if key == 'lost' else '<'} {limit}"
            print(f"  {path:<5} {kind:<9} {LABELS[key]:<44} {bound:<6} max {shown!s:<8} {v}")
    return {"summary": summary, "verdicts": verdicts}


# -- main -------------------------------------------------------------------------------------


def one_round(
    client: SyncPrefectClient,
    state: LabState,
    deployments: Deployments,
    path: str,
    kind: str,
    scenarios: list[str],
) -> dict[str, Any]:
    """The chosen scenarios once, on fresh clusters; an error is recorded, not fatal."""
    ids = deployments.ids[path]
    row: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("failover", lambda: failover_run(client, state, ids["failover"], kind)),
        ("switchover", lambda: switchover_run(client, state, ids["switchover"], kind)),
        ("rollback", lambda: rollback_run(client, state, ids["failover"], kind)),
    ]
    for name, step in steps:
        if name not in scenarios:
            continue
        try:
            part = step()
        except Exception as exc:
            part = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        row.update({k if k in LABELS else f"{name}_{k}": v for k, v in part.items()})
        shown = {k: v for k, v in part.items() if k not in ("error",)}
        print(f"  {path:<5} {kind:<9} {name:<10} {shown}", flush=True)
        if "error" in part:
            print(f"  {path:<5} {kind:<9} {name:<10} ERROR {part['error']}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--paths", default="lab,fast,warm", help="among lab (2 s worker), fast, warm"
    )
    parser.add_argument("--scenarios", default="failover,switchover,rollback")
    parser.add_argument("--fast-query-seconds", type=float, default=1.0)
    parser.add_argument(
        "--fast-scenarios",
        default="failover",
        help="what the fast path runs (its flow process starts like the lab worker's)",
    )
    parser.add_argument("--warm-poll-seconds", type=float, default=0.25)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--logs", type=Path, default=None, help="keep the lab's logs here")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    paths = [p for p in args.paths.split(",") if p]
    scenarios = [s for s in args.scenarios.split(",") if s]
    known = {"failover", "switchover", "rollback"}
    if not set(scenarios) <= known:
        parser.error("--scenarios among failover,switchover,rollback")
    if args.runs < 1 or not set(kinds) <= set(KINDS) or not set(paths) <= {"lab", *POOLS}:
        parser.error("--runs >= 1, --kinds among postgres,mysql,redis, --paths among lab,fast,warm")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # A fence ends the probes' connections; psycopg logs each ignored rollback of those.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    started = time.monotonic()
    lab = Lab(
        Path(tempfile.mkdtemp(prefix="siprec-bench-failover-")),
        services=[s for s in SERVICES if s.name in WANTED],
    )
    results: dict[str, Any] = {
        "paths": paths,
        "scenarios": {
            p: [x for x in scenarios if p != "fast" or x in args.fast_scenarios.split(",")]
            for p in paths
        },
        "runs": {},
        "sentinel": [],
    }
    try:
        state = lab.up()
        print(f"lab up in {time.monotonic() - started:.1f} s", flush=True)
        with (
            temporary_settings(updates={PREFECT_API_URL: state.prefect_api_url}),
            contextlib.ExitStack() as stack,
        ):
            t = time.monotonic()
            register_deployments(state)
            save_lever_blocks(state)
            print(f"deployments and lever blocks in {time.monotonic() - t:.1f} s", flush=True)
            if "fast" in paths:
                stack.enter_context(fast_worker(state, args.fast_query_seconds))
            if "warm" in paths:
                stack.enter_context(warm_runner(state, args.warm_poll_seconds))
            client = stack.enter_context(get_client(sync_client=True))
            deployments = deployment_ids(client, paths)
            for i in range(1, args.runs + 1):
                print(f"round {i}/{args.runs} ({time.monotonic() - started:.0f} s)", flush=True)
                for kind in kinds:
                    for path in paths:
                        chosen = results["scenarios"][path]
                        row = one_round(client, state, deployments, path, kind, chosen)
                        results["runs"].setdefault(path, {}).setdefault(kind, []).append(row)
                try:
                    seconds = sentinel_run()
                except Exception as exc:
                    seconds = None
                    print(f"  sentinel ERROR {type(exc).__name__}: {exc}", flush=True)
                results["sentinel"].append(seconds)
                print(f"  sentinel  kill -> writable {seconds}", flush=True)
    finally:
        if args.logs:
            shutil.copytree(lab.root / "logs", args.logs, dirs_exist_ok=True)
        lab.down()
    results.update(report(results))
    load_end = os.getloadavg()
    total = time.monotonic() - started
    results.update(
        load_start=load_start,
        load_end=load_end,
        total_seconds=round(total, 1),
        fast_query_seconds=args.fast_query_seconds,
        warm_poll_seconds=args.warm_poll_seconds,
        lab_worker_query_seconds=2,
        references=REFERENCE,
        targets=TARGETS,
    )
    print(f"\nload average at end: {load_end}; whole run {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
