"""Redis 7.0 primary, replica and an empty scratch server for the lab, and a SIPREC seeder.

All three are password protected (``requirepass``; the replica also ``masterauth``) with one
random password kept in the lab's secrets. The password reaches redis-server through a 0600
config file, never its command line. Persistence is off (``--save ''``, no AOF), every server has
its own ``--dir`` under ``<lab>/redis``, and ``--repl-diskless-sync-delay 0`` makes a full
resync (the replica's and our backups') start at once instead of after 5 s.

``redis-scratch`` is an empty server the tests restore into (FLUSHALL first): the replica is
shared by every test and cannot be a restore target.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.sources.redis import RedisTarget

PASSWORD_SECRET = "redis_password"  # noqa: S105 - the key, not the password
LOOPBACK = "127.0.0.1"
#: Logical databases the seeder fills (db0 call state, db1 queues, db2 indexes).
SEED_DATABASES = (0, 1, 2)


@dataclass
class RedisEndpoint:
    """How to reach one lab Redis server. ``password`` is never shown by repr()."""

    host: str
    port: int
    password: str = field(repr=False)
    role: str = "primary"

    def target(self) -> RedisTarget:
        """The engine's view of this server."""
        return RedisTarget(host=self.host, port=self.port, password=self.password)

    def client(self, db: int = 0) -> redis.Redis:
        """A redis-py client of database ``db``."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, db=db)

    @classmethod
    def from_record(cls, record: ServiceRecord, password: str) -> RedisEndpoint:
        """Build the endpoint from a lab.json record and the lab's Redis password."""
        if record.host is None or record.port is None:
            raise LabError(f"lab.json: {record.name} has no address")
        return cls(host=record.host, port=record.port, password=password, role=record.fact("role"))


def find_redis_server() -> Path:
    """``$SIPREC_LAB_REDIS_SERVER`` or redis-server on PATH."""
    env = os.environ.get("SIPREC_LAB_REDIS_SERVER")
    found = env or shutil.which("redis-server")
    if not found or not os.access(found, os.X_OK):
        raise LabError(
            "redis-server not found: install it (Debian: apt-get install redis-server) or set "
            "SIPREC_LAB_REDIS_SERVER"
        )
    return Path(found)


class _RedisService(Service):
    """A redis-server on a free loopback port, its password in a private config file."""

    group = "redis"
    role: str

    def _dir(self, root: Path) -> Path:
        return root / "redis" / self.name

    def reset(self, root: Path) -> None:
        """Remove what an interrupted first start left."""
        shutil.rmtree(self._dir(root), ignore_errors=True)

    def _config(self, ctx: LabContext, data_dir: Path) -> Path:
        password = ctx.secrets.get(PASSWORD_SECRET)
        if not password:
            raise LabError(f"{self.name}: the lab has no Redis password secret")
        lines = [f'requirepass "{password}"']
        lines += self._extra_config(ctx, password)
        conf = data_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return conf

    def _extra_config(self, ctx: LabContext, password: str) -> list[str]:
        return []

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Start redis-server and wait until it answers (and, for the replica, replicates)."""
        server = find_redis_server()
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        data_dir = self._dir(ctx.root)
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = self._config(ctx, data_dir)
        proc = _process.spawn(
            [
                server,
                conf,
                "--port",
                str(port),
                "--bind",
                LOOPBACK,
                "--dir",
                data_dir,
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                *self._extra_args(ctx),
            ],
            log=ctx.log(self.name),
            cwd=data_dir,
        )
        record = ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            facts={
                "role": self.role,
                "url": f"redis://{LOOPBACK}:{port}",
                "password": f"lab.json secrets.{PASSWORD_SECRET}",
                "data_dir": str(data_dir),
                "redis_server": str(server),
            },
        )
        password = ctx.secrets[PASSWORD_SECRET]
        record.started_ticks = self.launch(
            ctx, proc, lambda: self._answers(port, password), timeout=30.0
        )
        return record

    def _extra_args(self, ctx: LabContext) -> list[str]:
        return []

    def _answers(self, port: int, password: str) -> bool:
        try:
            with redis.Redis(
                host=LOOPBACK, port=port, password=password, socket_timeout=2
            ) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def is_ready(self, record: ServiceRecord) -> bool:
        """The server answers PING (with the password; the state file holds it)."""
        assert record.port is not None
        try:
            with redis.Redis(host=LOOPBACK, port=record.port, socket_timeout=2) as client:
                client.ping()
        except redis.AuthenticationError:
            return True  # answering, and asking for the password as it should
        except redis.ResponseError as exc:
            return "NOAUTH" in str(exc)
        except redis.RedisError:
            return False
        return True


class RedisPrimary(_RedisService):
    """The primary the backups read from."""

    name = "redis-primary"
    role = "primary"


class RedisReplica(_RedisService):
    """A replica of the primary (``replicaof`` + ``masterauth``); ready once its link is up."""

    name = "redis-replica"
    role = "replica"
    after = ("redis-primary",)

    def _extra_config(self, ctx: LabContext, password: str) -> list[str]:
        return [f'masterauth "{password}"']

    def _extra_args(self, ctx: LabContext) -> list[str]:
        primary = ctx.record("redis-primary")
        return ["--replicaof", LOOPBACK, str(primary.port)]

    def _answers(self, port: int, password: str) -> bool:
        try:
            with redis.Redis(
                host=LOOPBACK, port=port, password=password, socket_timeout=2
            ) as client:
                info = cast(dict[str, Any], client.info("replication"))
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"


class RedisScratch(_RedisService):
    """An empty server that the tests restore into (they FLUSHALL it first)."""

    name = "redis-scratch"
    role = "scratch"


# --- seed data --------------------------------------------------------------------------------

_STATES = ("ringing", "active", "held", "recording", "transferring")
_CODECS = ("PCMU/8000", "PCMA/8000", "opus/48000/2", "G722/8000")
_NODES = ("srs1", "srs2", "srs3")
_METADATA = (
    '<?xml version="1.0" encoding="UTF-8"?><recording xmlns="urn:ietf:params:xml:ns:recording:1">'
    '<datamode>complete</datamode><session session_id="{sid}"><sipSessionID>{call}'
    "</sipSessionID><start-time>{t}</start-time></session><participant participant_id="
    '"{p1}"><nameID aor="sip:+{a}@carrier.example.com"><name>{n1}</name></nameID>'
    '</participant><participant participant_id="{p2}"><nameID aor="sip:+{b}@pbx.example.com">'
    '<name>{n2}</name></nameID></participant><stream stream_id="{s1}" session_id="{sid}">'
    '<label>1</label></stream><stream stream_id="{s2}" session_id="{sid}"><label>2</label>'
    "</stream></recording>"
)
_NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")


def _session(rng: random.Random, n: int, run: int) -> tuple[str, dict[str, str], int]:
    """One active call's state: the hash key, its fields and a TTL in seconds."""
    sid = f"{rng.getrandbits(128):032x}"
    call = f"{rng.getrandbits(64):016x}@sbc{n % 3 + 1}.carrier.example.com"
    started = 1_767_225_600 + n * 3
    fields = {
        "call_id": call,
        "state": _STATES[n % len(_STATES)],
        "from": f"+1555{rng.randrange(10**7):07d}",
        "to": f"+4420{rng.randrange(10**7):07d}",
        "codec": _CODECS[n % len(_CODECS)],
        "node": _NODES[n % len(_NODES)],
        "started_at": str(started),
        "rtp_port": str(20000 + n % 40000),
        "packets": str(rng.randrange(10**6)),
        "metadata": _METADATA.format(
            sid=sid,
            call=call,
            t=started,
            p1=f"{rng.getrandbits(64):016x}",
            p2=f"{rng.getrandbits(64):016x}",
            a=rng.randrange(10**10),
            b=rng.randrange(10**10),
            n1=rng.choice(_NAMES),
            n2=rng.choice(_NAMES),
            s1=f"{rng.getrandbits(64):016x}",
            s2=f"{rng.getrandbits(64):016x}",
        ),
    }
    return f"siprec:run{run}:session:{sid}", fields, 3600 + n % 7200


def fill_redis(target: RedisTarget, mb: int, *, batch: int = 500, seed: int = 7) -> int:
    """Add about ``mb`` MiB of SIPREC state (pipelined) and return the bytes of values written.

    db0: active call state (hashes with TTLs, call-id -> session strings with TTLs, counters);
    db1: work queues (lists of JSON jobs) and event streams; db2: active-session sets and
    recordings-by-time sorted sets; plus plain strings of 100 B to 64 KiB. Repeated calls add
    new keys (a run number keeps them apart).
    """
    dbs = {db: target.client(db) for db in SEED_DATABASES}
    try:
        run = int(cast(int, dbs[0].incr("siprec:seed:runs")))
        rng = random.Random(seed * 1000 + run)  # noqa: S311 - test data, not cryptography
        goal = mb << 20
        written = 0
        n = 0
        while written < goal:
            p0, p1, p2 = (dbs[d].pipeline(transaction=False) for d in SEED_DATABASES)
            for _ in range(batch):
                key, fields, ttl = _session(rng, n, run)
                p0.hset(key, mapping=fields)
                p0.expire(key, ttl)
                p0.set(f"siprec:run{run}:call:{fields['call_id']}", key, ex=ttl)
                written += sum(len(v) for v in fields.values()) + len(key)
                if n % 10 == 0:
                    p0.incrby(f"siprec:counter:{fields['node']}:calls", 1)
                    job = (
                        f'{{"session":"{key}","action":"upload","node":"{fields["node"]}",'
                        f'"attempt":{n % 3}}}'
                    )
                    p1.rpush(f"siprec:run{run}:queue:upload:{n % 16}", job)
                    p1.xadd(
                        f"siprec:run{run}:events:{fields['node']}",
                        {"type": "call.state", "session": key, "state": fields["state"]},
                    )
                    p2.sadd(f"siprec:run{run}:active:{fields['node']}", key)
                    p2.zadd(f"siprec:run{run}:recordings:{n // 5000}", {key: n})
                    written += len(job) + 2 * len(key) + 40
                if n % 50 == 0:
                    size = rng.choice((100, 1000, 8000, 65536))
                    blob = rng.randbytes(size // 4).hex() + "a" * (size - size // 2)
                    p0.set(f"siprec:run{run}:blob:{n}", blob)
                    p2.set(f"siprec:run{run}:int:{n}", n * 7)
                    written += len(blob) + 8
                n += 1
            for pipe in (p0, p1, p2):
                pipe.execute()
        return written
    except redis.RedisError as exc:
        raise LabError(f"seeding {target.describe()} failed: {exc}") from None
    finally:
        for client in dbs.values():
            client.close()


def redis_key_counts(target: RedisTarget) -> dict[str, int]:
    """Keys per non-empty logical database: ``{"db0": n, ...}``."""
    return target.key_counts()


def wait_replica_synced(primary: RedisTarget, replica: RedisTarget, timeout: float = 30.0) -> None:
    """Wait until the replica has processed every write the primary made so far."""
    with primary.client() as p, replica.client() as r:
        want = int(cast(dict[str, Any], p.info("replication"))["master_repl_offset"])
        deadline = time.monotonic() + timeout
        while True:
            info = cast(dict[str, Any], r.info("replication"))
            if (
                info.get("master_link_status") == "up"
                and int(info.get("slave_repl_offset", -1)) >= want
            ):
                return
            if time.monotonic() > deadline:
                raise LabError(f"the Redis replica is still behind after {timeout:.0f} s")
            time.sleep(0.02)
