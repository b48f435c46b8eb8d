"""The lab: a throwaway SIPREC data tier for the demo, the tests and the benchmarks.

``Lab().up()`` starts, on free loopback ports under one directory (``$SIPREC_LAB_DIR`` or
``/tmp/siprec-backup-lab``) and from the real server binaries: PostgreSQL 15 and MariaDB 10.11
primaries with replicas, a Redis 7 primary with a replica and a scratch server, the S3 (moto),
GCS and Azure Blob (Azurite) emulators, the failover levers (sshd, HAProxy and nginx in front of
two small HTTP backends, a BIND primary and secondary), and a Prefect server with a process
worker.
``Lab().down()`` stops them. :func:`seed_platform` fills the whole platform with SIPREC data.
"""

from siprec_backup.lab.lab import DEFAULT_LAB_DIR, SERVICES, Lab, LabState, default_root
from siprec_backup.lab.mariadb import MariaDBEndpoint, fill_mariadb, mariadb_row_counts
from siprec_backup.lab.platform_data import PlatformData, seed_platform
from siprec_backup.lab.postgres import PostgresEndpoint
from siprec_backup.lab.prefect_worker import WORK_POOL
from siprec_backup.lab.recordings import WrittenRecordings, write_recordings
from siprec_backup.lab.redis import RedisEndpoint, fill_redis, redis_key_counts
from siprec_backup.lab.seed import SeedStats, create_schema, fill, row_counts
from siprec_backup.lab.service import LabContext, Service, ServiceRecord

__all__ = [
    "DEFAULT_LAB_DIR",
    "SERVICES",
    "WORK_POOL",
    "Lab",
    "LabContext",
    "LabState",
    "MariaDBEndpoint",
    "PlatformData",
    "PostgresEndpoint",
    "RedisEndpoint",
    "SeedStats",
    "Service",
    "ServiceRecord",
    "WrittenRecordings",
    "create_schema",
    "default_root",
    "fill",
    "fill_mariadb",
    "fill_redis",
    "mariadb_row_counts",
    "redis_key_counts",
    "row_counts",
    "seed_platform",
    "write_recordings",
]
