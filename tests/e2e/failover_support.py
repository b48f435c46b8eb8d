"""What the failover flow tests share: a fresh three-node lab cluster of each kind behind its own
HAProxy with the blocks describing it (:mod:`deployments.lab_failover`), the published audit
trail, and probes built on :mod:`siprec_backup.lab.probes` (which node answers through HAProxy,
what each BIND server answers)."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deployments.lab_failover import KINDS, RunningCluster
from deployments.lab_failover import running_cluster as lab_cluster
from siprec_backup.lab import LabState
from siprec_backup.lab.probes import Writer, answering, bind_answers, has
from tests.e2e.conftest import artifact

__all__ = ["KINDS", "RunningCluster"]


@contextlib.contextmanager
def running_cluster(
    lab: LabState, kind: str, *, ssh: bool = False, **settings: Any
) -> Iterator[RunningCluster]:
    """A fresh cluster of ``kind`` with HAProxy, DNS record and blocks; stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"siprec-failover-{kind}-"))
    root.chmod(0o711)  # the postgres and mysql accounts traverse it to their data
    name = f"fo-{kind}-{uuid.uuid4().hex[:6]}"
    with lab_cluster(lab, kind, root, name, ssh=ssh, **settings) as run:
        yield run


def audit_of(name: str, mode: str = "failover") -> dict[str, Any]:
    """The audit trail run ``mode`` of cluster ``name`` published (its artifact's JSON block)."""
    markdown = artifact(f"{mode}-{name}").data
    return dict(json.loads(markdown.split("```json\n", 1)[1].split("\n```", 1)[0]))


def steps(audit: dict[str, Any]) -> list[tuple[str, str]]:
    """(step key, status) of every step of an audit trail."""
    return [(s["key"], s["status"]) for s in audit["steps"]]


# -- kind-neutral probes (siprec_backup.lab.probes, shared with the benchmark) -----------------


def wait_has(kind: str, target: Any, marker: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not has(kind, target, marker):
        assert time.monotonic() < deadline, f"{marker} never reached {target.host}:{target.port}"
        time.sleep(0.1)


def served_by(run: RunningCluster) -> str:
    """The node answering through HAProxy's frontend (by its address and port)."""
    found = answering(run.kind, run.frontend())
    for node in run.cluster.nodes:
        if (node.host, node.port) == found:
            return node.name
    raise AssertionError(f"HAProxy reached {found}, which is no node of {run.name}")


def app_writer(run: RunningCluster) -> Writer:
    """A writer through HAProxy's frontend, as the platform's application."""
    return Writer(run.kind, run.frontend())


def dns_answers(lab: LabState, record: str) -> dict[str, set[str]]:
    """The A record's addresses on BIND's primary and secondary, asked directly."""
    return {role: found[0] for role, found in bind_answers(lab, record).items()}


def dns_ttls(lab: LabState, record: str) -> dict[str, set[int]]:
    """The A record's TTL on BIND's primary and secondary."""
    return {role: found[1] for role, found in bind_answers(lab, record).items()}
