"""The lab: a throwaway SIPREC data tier for the demo, the tests and the benchmarks.

``Lab().up()`` starts a PostgreSQL 15 primary with a streaming replica and a Prefect server with a
process worker on free loopback ports under one directory (``$SIPREC_LAB_DIR`` or
``/tmp/siprec-backup-lab``), from the real server binaries; ``Lab().down()`` stops them.
"""

from siprec_backup.lab.lab import DEFAULT_LAB_DIR, SERVICES, Lab, LabState, default_root
from siprec_backup.lab.postgres import PostgresEndpoint
from siprec_backup.lab.prefect_worker import WORK_POOL
from siprec_backup.lab.seed import SeedStats, create_schema, fill, row_counts
from siprec_backup.lab.service import LabContext, Service, ServiceRecord

__all__ = [
    "DEFAULT_LAB_DIR",
    "SERVICES",
    "WORK_POOL",
    "Lab",
    "LabContext",
    "LabState",
    "PostgresEndpoint",
    "SeedStats",
    "Service",
    "ServiceRecord",
    "create_schema",
    "default_root",
    "fill",
    "row_counts",
]
