"""Blocks pointing at the lab's servers, saved under the names the deployments use.

The lab platform ``siprec-lab`` has four sources (PostgreSQL, MariaDB, Redis, the recordings
tree) and four stores (a local directory and the S3, GCS and Azure emulators); each source also
gets a restore target (scratch databases, the scratch Redis, an empty directory). The levers a
failover pulls get a block each (:data:`LEVERS`): the lab's sshd, HAProxy, nginx and BIND zone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from blocks import (
    AzureBlobStorage,
    EncryptionKey,
    GCSStorage,
    LocalStorage,
    MySQLDatabase,
    Platform,
    PostgresDatabase,
    RecordingsDirectory,
    RedisServer,
    ReplicationCluster,
    S3Storage,
)
from blocks.dns import BindDnsZone
from blocks.load_balancers import HAProxyLoadBalancer, NginxLoadBalancer
from blocks.platform import PlatformSource, SourceKind
from blocks.replication import ClusterKind, ReplicationNodeConfig
from blocks.ssh import SshHost
from siprec_backup.lab import LabState
from siprec_backup.lab.object_stores import (
    LAB_BUCKET,
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
)
from siprec_backup.stream import MasterKey
from siprec_backup.verify.config import RecordingReferences, SqlCheck, VerificationConfig

KEY_ID = "lab-master-1"
STORE_PREFIX = "siprec"
PLATFORM = "siprec-lab"
CLUSTER = "siprec-lab"
#: Catalog name of each lab source -> (kind, source block, restore target block).
SOURCES: dict[str, tuple[SourceKind, str, str]] = {
    "siprec-db": ("postgres", "siprec-postgres", "siprec-postgres"),
    "siprec-mariadb": ("mysql", "siprec-mariadb", "siprec-mariadb"),
    "siprec-redis": ("redis", "siprec-redis", "siprec-redis-scratch"),
    "siprec-recordings": ("recordings", "siprec-recordings", "siprec-recordings-restore"),
}
#: Storage block name per lab store.
STORES = {
    "local": "siprec-storage",
    "s3": "siprec-s3",
    "gcs": "siprec-gcs",
    "azure": "siprec-azure",
}
#: What the lab platform's restore verification checks besides the manifests (an example of
#: each kind of check an operator configures).
VERIFICATION = VerificationConfig(
    checks=[
        SqlCheck(
            name="every recording has its size and sha256",
            source="siprec-db",
            sql="SELECT count(*) FROM siprec.recordings WHERE size_bytes = 0 OR sha256 IS NULL",
            expected="0",
        ),
        SqlCheck(
            name="every participant belongs to a session",
            source="siprec-mariadb",
            sql="SELECT count(*) FROM participants p LEFT JOIN recording_sessions s "
            "ON s.id = p.session_id WHERE s.id IS NULL",
            expected="0",
        ),
    ],
    references=RecordingReferences(source="siprec-db"),
)
#: Replication cluster block per lab cluster (its name in alerts and metrics is the same).
REPLICATION = ("siprec-lab-pg", "siprec-lab-mariadb", "siprec-lab-redis")
#: Database names the demo restores the SQL sources into (scratch, beside the originals).
#: The lever blocks: the lab's SSH host, load balancers and DNS zone.
LEVERS = {
    "ssh": "siprec-lab-ssh",
    "haproxy": "siprec-lab-haproxy",
    "nginx": "siprec-lab-nginx",
    "dns": "siprec-lab-dns",
}
RESTORE_DATABASES = {"siprec-db": "siprec_restore_check", "siprec-mariadb": "siprec_restore_check"}


@dataclass(frozen=True)
class LabBlocks:
    """The names of the saved blocks and where the lab's files are."""

    database: str
    storage: str
    key: str
    key_file: Path
    store_dir: Path
    recordings_dir: Path
    recordings_restore_dir: Path
    prefix: str = STORE_PREFIX
    platform: str = PLATFORM
    cluster: str = CLUSTER
    stores: dict[str, str] = field(default_factory=lambda: dict(STORES))

    @property
    def restore_targets(self) -> dict[str, str]:
        """Restore target block per source, as `restore-platform` takes them."""
        return {name: target for name, (_, _, target) in SOURCES.items()}


def lab_master_key(state: LabState) -> tuple[MasterKey, Path]:
    """The lab's master key, kept in a 0600 file beside the lab (the break-glass copy)."""
    path = state.root / "master.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(MasterKey.generate(KEY_ID).material.hex() + "\n")
    return MasterKey.from_text(KEY_ID, path.read_text()), path


def _save_connections(state: LabState, role: str, suffix: str) -> None:
    """PostgreSQL, MariaDB and Redis connection blocks of one role of the lab's servers, named
    ``siprec-postgres<suffix>``, ``siprec-mariadb<suffix>`` and ``siprec-redis<suffix>``."""
    pg = state.postgres(role)
    PostgresDatabase(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=SecretStr(pg.password),
        dbname=pg.dbname,
        sslmode="prefer",
        bin_dir=str(pg.bin_dir),
    ).save(f"siprec-postgres{suffix}", overwrite=True)
    maria = state.mariadb(role)
    MySQLDatabase(
        host=maria.host,
        port=maria.port,
        user=maria.user,
        password=SecretStr(maria.password),
        databases=[maria.dbname],
        bin_dir=str(maria.bin_dir),
    ).save(f"siprec-mariadb{suffix}", overwrite=True)
    redis = state.redis(role)
    RedisServer(host=redis.host, port=redis.port, password=SecretStr(redis.password)).save(
        f"siprec-redis{suffix}", overwrite=True
    )


def _save_sources(state: LabState, recordings: Path, recordings_restore: Path) -> None:
    """The primaries (the platform's sources), the replicas, the scratch Redis and the
    recordings directories."""
    _save_connections(state, "primary", "")
    _save_connections(state, "replica", "-replica")
    scratch = state.redis("scratch")
    RedisServer(host=scratch.host, port=scratch.port, password=SecretStr(scratch.password)).save(
        "siprec-redis-scratch", overwrite=True
    )
    RecordingsDirectory(path=str(recordings)).save("siprec-recordings", overwrite=True)
    RecordingsDirectory(path=str(recordings_restore)).save(
        "siprec-recordings-restore", overwrite=True
    )


def _save_replication() -> None:
    """One ReplicationCluster block per lab cluster: the primary source block and the replica's."""
    clusters: tuple[tuple[str, ClusterKind, str, str, str], ...] = (
        ("siprec-lab-pg", "postgres", "siprec-postgres", "siprec-postgres-replica", "replica1"),
        ("siprec-lab-mariadb", "mysql", "siprec-mariadb", "siprec-mariadb-replica", "replica"),
        ("siprec-lab-redis", "redis", "siprec-redis", "siprec-redis-replica", "replica"),
    )
    for name, kind, primary, replica, replica_name in clusters:
        ReplicationCluster(
            cluster=name,
            kind=kind,
            nodes=[
                ReplicationNodeConfig(name="primary", role="primary", block=primary),
                ReplicationNodeConfig(name=replica_name, role="replica", block=replica),
            ],
            timeout_seconds=3,
        ).save(name, overwrite=True)


def _save_stores(state: LabState, store_dir: Path) -> None:
    LocalStorage(path=str(store_dir), prefix=STORE_PREFIX).save(STORES["local"], overwrite=True)
    S3Storage(
        bucket=LAB_BUCKET,
        prefix=STORE_PREFIX,
        region=MOTO_REGION,
        endpoint_url=state.s3_endpoint,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=SecretStr(MOTO_SECRET_KEY),
    ).save(STORES["s3"], overwrite=True)
    GCSStorage(
        bucket=LAB_BUCKET, prefix=STORE_PREFIX, project="siprec-lab", endpoint=state.gcs_endpoint
    ).save(STORES["gcs"], overwrite=True)
    AzureBlobStorage(
        container=LAB_BUCKET,
        prefix=STORE_PREFIX,
        connection_string=SecretStr(state.azure_connection_string),
    ).save(STORES["azure"], overwrite=True)


def save_lever_blocks(state: LabState) -> None:
    """The lever blocks of the lab's servers that run (a narrowed lab may lack some)."""
    if "sshd" in state.services:
        ssh = state.ssh()
        SshHost(
            host=ssh.host,
            port=ssh.port,
            username=ssh.user,
            private_key=SecretStr(ssh.client_key.read_text()),
            known_hosts=ssh.known_hosts,
        ).save(LEVERS["ssh"], overwrite=True)
    if "haproxy" in state.services:
        haproxy = state.haproxy()
        HAProxyLoadBalancer(
            runtime_api=haproxy.runtime_tcp,
            endpoint=haproxy.stats_url,
            username=haproxy.stats_user,
            password=SecretStr(haproxy.stats_password),
        ).save(LEVERS["haproxy"], overwrite=True)
    if "nginx" in state.services:
        nginx = state.nginx()
        NginxLoadBalancer(
            includes={nginx.upstream: nginx.include},
            pid_file=nginx.pid_file,
            nginx_args=list(nginx.nginx_args),
            probe_url=nginx.url,
        ).save(LEVERS["nginx"], overwrite=True)
    if "bind-primary" in state.services and "bind-secondary" in state.services:
        primary, secondary = state.bind("primary"), state.bind("secondary")
        BindDnsZone(
            zone=primary.zone,
            primary=primary.address,
            nameservers=[primary.address, secondary.address],
            key_name=primary.key_name,
            key_algorithm=primary.key_algorithm,
            key_secret=SecretStr(primary.key_secret),
        ).save(LEVERS["dns"], overwrite=True)


def save_lab_blocks(state: LabState, *, key: str = "siprec-key") -> LabBlocks:
    """Save (overwrite) every block of the lab platform, pointing at this lab."""
    master, key_file = lab_master_key(state)
    store_dir = state.root / "backups"
    store_dir.mkdir(exist_ok=True)
    recordings, recordings_restore = state.root / "recordings", state.root / "recordings-restore"
    recordings.mkdir(exist_ok=True)
    _save_sources(state, recordings, recordings_restore)
    _save_stores(state, store_dir)
    _save_replication()
    save_lever_blocks(state)
    EncryptionKey(key_id=master.key_id, key=SecretStr(master.material.hex())).save(
        key, overwrite=True
    )
    Platform(
        cluster=CLUSTER,
        storage=STORES["local"],
        key=key,
        sources=[
            PlatformSource(name=name, kind=kind, block=block)
            for name, (kind, block, _) in SOURCES.items()
        ],
        verification=VERIFICATION,
        replication=list(REPLICATION),
    ).save(PLATFORM, overwrite=True)
    return LabBlocks(
        database="siprec-postgres",
        storage=STORES["local"],
        key=key,
        key_file=key_file,
        store_dir=store_dir,
        recordings_dir=recordings,
        recordings_restore_dir=recordings_restore,
    )
