"""``siprec-backup metrics`` on the real lab, without Prefect: the replicas' lag and status, the
figures of real backups and of their real restore verification, from a YAML config; printed
once, written as a node_exporter textfile, and served to a real HTTP scrape."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from siprec_backup.backup import run_backup
from siprec_backup.backup_set import BackupSet, SetMember, write_backup_set
from siprec_backup.errors import ConfigurationError
from siprec_backup.lab import LabState
from siprec_backup.manifest import MANIFEST_NAME, Manifest, backup_prefix, new_backup_id
from siprec_backup.metrics_config import MetricsCollector, load_config
from siprec_backup.sources.postgres import PostgresSource
from siprec_backup.sources.redis import RedisSource
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey
from siprec_backup.verify.report import VerificationReport, record_verification
from siprec_backup.verify.verifier import SetVerifier
from tests.conftest import CLI, run_cli

CLUSTER = "mx"
PASSWORD_ENV = "REDIS_MONITOR_PASSWORD"
#: The CLI must not need a Prefect server: point it at a port where nothing listens.
NO_PREFECT = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
STATUSES = ("healthy", "lagging", "broken", "unreachable")


@dataclass(frozen=True)
class Backups:
    """A local store with a verified backup of the lab's PostgreSQL and Redis."""

    store_dir: Path
    manifests: dict[str, Manifest]
    report: VerificationReport

    def copy(self, tmp_path: Path) -> Path:
        """A private copy of the store for one test to change."""
        target = tmp_path / "store"
        shutil.copytree(self.store_dir, target)
        return target


@pytest.fixture(scope="module")
def backups(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Backups:
    store_dir = tmp_path_factory.mktemp("mx-store")
    store = LocalStore(store_dir)
    key = MasterKey.generate("mx-key")
    manifests = {
        "db": run_backup(
            PostgresSource(lab.postgres().target()), store, key, cluster=CLUSTER, source_name="db"
        ),
        "redis": run_backup(
            RedisSource(lab.redis().target()), store, key, cluster=CLUSTER, source_name="redis"
        ),
    }
    members = [
        SetMember(source=s, kind=m.source_kind, backup_id=m.backup_id) for s, m in manifests.items()
    ]
    backup_set = BackupSet.build(new_backup_id(), CLUSTER, datetime.now(UTC), members)
    write_backup_set(store, "", backup_set)
    with SetVerifier(store, "", backup_set, key) as verifier:
        report = verifier.run()
    assert report.passed, report.summary()
    record_verification(store, "", report)
    return Backups(store_dir, manifests, report)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(lab: LabState, path: Path, store_dir: Path, *, closed_port: int) -> Path:
    """The lab's replicated servers (and one node on a closed port) and the store."""
    pg = {r: lab.postgres(r) for r in ("primary", "replica")}
    my = {r: lab.mariadb(r) for r in ("primary", "replica")}
    rd = {r: lab.redis(r) for r in ("primary", "replica")}
    config = {
        "timeout_seconds": 3,
        "thresholds": {"max_lag_bytes": 64 << 20, "max_lag_seconds": 60},
        "stores": [{"url": str(store_dir), "cluster": CLUSTER}],
        "clusters": [
            {
                "name": "lab-pg",
                "kind": "postgres",
                "nodes": [
                    {
                        "name": "pg-primary",
                        "role": "primary",
                        "url": f"postgresql://{pg['primary'].superuser}@{pg['primary'].host}:"
                        f"{pg['primary'].port}/postgres",
                    },
                    {
                        "name": "replica1",
                        "role": "replica",
                        "url": f"postgresql://{pg['replica'].superuser}@{pg['replica'].host}:"
                        f"{pg['replica'].port}/postgres",
                    },
                    {
                        "name": "pg-gone",
                        "role": "replica",
                        "url": f"postgresql://postgres@127.0.0.1:{closed_port}/postgres",
                    },
                ],
            },
            {
                "name": "lab-my",
                "kind": "mysql",
                "nodes": [
                    {
                        "name": f"my-{role}",
                        "role": role,
                        "url": f"mysql://{ep.admin_user}@{ep.host}:{ep.port}",
                    }
                    for role, ep in my.items()
                ],
            },
            {
                "name": "lab-rd",
                "kind": "redis",
                "thresholds": {"max_lag_bytes": 1 << 20},
                "nodes": [
                    {
                        "name": f"rd-{role}",
                        "role": role,
                        "url": f"redis://{ep.host}:{ep.port}",
                        "password_env": PASSWORD_ENV,
                    }
                    for role, ep in rd.items()
                ],
            },
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli_env(lab: LabState) -> dict[str, str]:
    return {**NO_PREFECT, PASSWORD_ENV: lab.redis().password}


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line of an exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def node(name: str, cluster: str, kind: str) -> str:
    return f'cluster="{cluster}",node="{name}",kind="{kind}"'


def source(name: str) -> str:
    return f'{{cluster="{CLUSTER}",source="{name}"}}'


def assert_figures(text: str, backups: Backups, store_label: str) -> None:
    """The values a scrape of the lab must show (all lab nodes healthy at rest)."""
    got = samples(text)
    healthy = [
        ("pg-primary", "lab-pg", "postgres"),
        ("replica1", "lab-pg", "postgres"),
        ("my-primary", "lab-my", "mysql"),
        ("my-replica", "lab-my", "mysql"),
        ("rd-primary", "lab-rd", "redis"),
        ("rd-replica", "lab-rd", "redis"),
    ]
    for name, cluster, kind in healthy:
        labels = node(name, cluster, kind)
        for status in STATUSES:
            key = f'siprec_replication_node_status{{{labels},status="{status}"}}'
            assert got[key] == (status == "healthy"), (key, text)
    for name, cluster, kind in (healthy[1], healthy[3], healthy[5]):
        lag = got[f"siprec_replication_lag_bytes{{{node(name, cluster, kind)}}}"]
        assert 0 <= lag < 1 << 20
    gone = node("pg-gone", "lab-pg", "postgres")
    assert got[f'siprec_replication_node_status{{{gone},status="unreachable"}}'] == 1
    assert f"siprec_replication_lag_bytes{{{gone}}}" not in got
    assert 0 < got["siprec_replication_check_duration_seconds"] < 10
    assert got[f'siprec_catalog_up{{store="{store_label}"}}'] == 1
    for name, manifest in backups.manifests.items():
        assert got[f"siprec_backup_success{source(name)}"] == 1
        assert got[f"siprec_backup_bytes{source(name)}"] == manifest.stored_bytes
        assert got[f"siprec_backup_plaintext_bytes{source(name)}"] == (
            manifest.object.plaintext_bytes
        )
        last = got[f"siprec_backup_last_success_timestamp_seconds{source(name)}"]
        assert last == pytest.approx(manifest.finished_at.timestamp(), abs=1e-3)
        duration = (manifest.finished_at - manifest.started_at).total_seconds()
        assert got[f"siprec_backup_duration_seconds{source(name)}"] == pytest.approx(duration)
        assert got[f"siprec_verify_success{source(name)}"] == 1
        verified = got[f"siprec_verify_last_success_timestamp_seconds{source(name)}"]
        assert verified == pytest.approx(backups.report.finished_at.timestamp(), abs=1e-3)
        part = next(p for p in backups.report.parts if p.source == name)
        assert got[f"siprec_verify_restore_duration_seconds{source(name)}"] == pytest.approx(
            part.restore_seconds
        )


def assert_no_secret(lab: LabState, *texts: str) -> None:
    for secret in (lab.redis().password, lab.postgres().password, lab.mariadb().password):
        assert all(secret not in text for text in texts)


def test_once_prints_lag_status_backup_and_verification(
    lab: LabState, backups: Backups, tmp_path: Path
) -> None:
    config = write_config(
        lab, tmp_path / "metrics.yaml", backups.store_dir, closed_port=free_port()
    )
    done = run_cli("metrics", "--config", str(config), "--once", env=cli_env(lab))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert_figures(done.stdout, backups, str(backups.store_dir))
    assert "# TYPE siprec_replication_lag_bytes gauge\n" in done.stdout
    assert_no_secret(lab, done.stdout, done.stderr, config.read_text())


def test_textfile_is_replaced_atomically(lab: LabState, backups: Backups, tmp_path: Path) -> None:
    config = write_config(
        lab, tmp_path / "metrics.yaml", backups.store_dir, closed_port=free_port()
    )
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    target = out_dir / "siprec.prom"
    target.write_text("old\n")
    before = target.stat().st_ino
    done = run_cli("metrics", "--config", str(config), "--textfile", str(target), env=cli_env(lab))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert target.stat().st_ino != before, "written in place, not renamed over the old file"
    assert [p.name for p in out_dir.iterdir()] == ["siprec.prom"]
    text = target.read_text()
    assert_figures(text, backups, str(backups.store_dir))
    assert_no_secret(lab, text, done.stderr)

    wrong = run_cli(
        "metrics", "--config", str(config), "--textfile", str(out_dir / "x.txt"), env=cli_env(lab)
    )
    assert wrong.returncode == 1
    assert wrong.stderr == (
        f"siprec-backup: error: --textfile {out_dir / 'x.txt'}: node_exporter reads only "
        "*.prom files\n"
    )


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """As run_cli does: nothing of the test process's Prefect or siprec-backup settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIPREC_"))}
    return {**clean, **extra}


def _scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (our loopback URL)
        assert response.status == 200
        return response.headers["Content-Type"], response.read().decode()


def test_listen_serves_real_scrapes_with_a_cached_catalog(
    lab: LabState, backups: Backups, tmp_path: Path
) -> None:
    store_dir = backups.copy(tmp_path)
    config = write_config(lab, tmp_path / "metrics.yaml", store_dir, closed_port=free_port())
    args = [CLI, "metrics", "--config", str(config), "--listen", "127.0.0.1:0"]
    server = subprocess.Popen(
        [*args, "--catalog-ttl", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(cli_env(lab)),
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        url = line.split()[1]
        content_type, text = _scrape(url)
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert_figures(text, backups, str(store_dir))

        # A new backup: the cached catalog still shows the old one (one listing per TTL) ...
        newer = run_backup(
            RedisSource(lab.redis().target()),
            LocalStore(store_dir),
            MasterKey.generate("mx-key"),
            cluster=CLUSTER,
            source_name="redis",
        )
        _, second = _scrape(url)
        redis_bytes = samples(second)[f"siprec_backup_bytes{source('redis')}"]
        assert redis_bytes == backups.manifests["redis"].stored_bytes
        assert samples(second)[f'siprec_catalog_age_seconds{{store="{store_dir}"}}'] > 0
        assert newer.stored_bytes > 0
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out == ""
    assert_no_secret(lab, text, second, err)


def test_listen_reads_the_catalog_again_after_the_ttl(
    lab: LabState, backups: Backups, tmp_path: Path
) -> None:
    store_dir = backups.copy(tmp_path)
    config = write_config(lab, tmp_path / "metrics.yaml", store_dir, closed_port=free_port())
    now = [1000.0]
    collector = MetricsCollector(
        load_config(config, cli_env(lab)), catalog_ttl=60, clock=lambda: now[0]
    )
    first = samples(collector.collect())
    newer = run_backup(
        RedisSource(lab.redis().target()),
        LocalStore(store_dir),
        MasterKey.generate("mx-key"),
        cluster=CLUSTER,
        source_name="redis",
    )
    key = f"siprec_backup_last_success_timestamp_seconds{source('redis')}"
    now[0] += 59
    assert samples(collector.collect())[key] == first[key]
    now[0] += 2
    again = samples(collector.collect())
    assert again[key] == pytest.approx(newer.finished_at.timestamp(), abs=1e-3)
    assert again[f'siprec_catalog_age_seconds{{store="{store_dir}"}}'] == 0


def test_an_unreadable_catalog_is_a_zero_not_a_failed_scrape(
    lab: LabState, backups: Backups, tmp_path: Path
) -> None:
    store_dir = backups.copy(tmp_path)
    config = write_config(lab, tmp_path / "metrics.yaml", store_dir, closed_port=free_port())
    manifest = backups.manifests["db"]
    where = backup_prefix("", CLUSTER, "db", manifest.backup_id) + MANIFEST_NAME
    (store_dir / where).write_text("{not json")
    done = run_cli("metrics", "--config", str(config), "--once", env=cli_env(lab))
    assert done.returncode == 0, done.stderr
    got = samples(done.stdout)
    assert got[f'siprec_catalog_up{{store="{store_dir}"}}'] == 0
    assert f"siprec_backup_bytes{source('db')}" not in got
    assert (
        got[
            'siprec_replication_node_status{cluster="lab-pg",node="pg-primary",kind="postgres",status="healthy"}'
        ]
        == 1
    )
    [warning] = done.stderr.splitlines()
    assert warning.startswith(f"warning: cannot read the catalog of {store_dir}: manifest ")


BAD_CONFIGS = {
    "not yaml": ("clusters: [unclosed", "is not valid YAML: "),
    "not a mapping": ("- 1\n- 2\n", "document: expected a mapping"),
    "empty": ("", "document: no stores, clusters or load balancers: nothing to measure"),
    "unknown field": ("stores: []\nclustrs: []\n", "clustrs: Extra inputs are not permitted"),
    "password field": (
        "clusters: [{name: c, kind: redis, nodes: [{name: a, role: primary, "
        "url: 'redis://127.0.0.1:6379', password: s3cret-pw}]}]",
        "clusters.0.nodes.0.password: Extra inputs are not permitted",
    ),
    "password in url": (
        "clusters: [{name: c, kind: postgres, nodes: [{name: a, role: primary, "
        "url: 'postgresql://u:s3cret-pw@127.0.0.1/db'}]}]",
        "clusters.0.nodes.0.url: no password in the URL: name a variable in password_env",
    ),
    "unset password_env": (
        "clusters: [{name: c, kind: redis, nodes: [{name: a, role: primary, "
        "url: 'redis://127.0.0.1:6379', password_env: SIPREC_TEST_UNSET_VARIABLE}]}]",
        "clusters.0.nodes.0.password_env: $SIPREC_TEST_UNSET_VARIABLE is not set",
    ),
    "wrong scheme": (
        "clusters: [{name: c, kind: mysql, nodes: [{name: a, role: primary, "
        "url: 'redis://127.0.0.1:6379'}]}]",
        "clusters.0.nodes.0.url: a mysql node needs a mysql:// or mariadb:// URL, not "
        "'redis://127.0.0.1:6379'",
    ),
    "bad role": (
        "clusters: [{name: c, kind: redis, nodes: [{name: a, role: leader, "
        "url: 'redis://127.0.0.1'}]}]",
        "clusters.0.nodes.0.role: Input should be 'primary' or 'replica'",
    ),
    "duplicate node": (
        "clusters: [{name: c, kind: redis, nodes: [{name: a, role: primary, "
        "url: 'redis://127.0.0.1'}, {name: a, role: replica, url: 'redis://127.0.0.2'}]}]",
        "clusters.0.nodes.1.name: node 'a' is listed twice",
    ),
    "bad threshold": (
        "thresholds: {max_lag_seconds: 10, broken_lag_seconds: 5}\nstores: [{url: /}]",
        "thresholds: threshold broken_lag_seconds (5.0) is below max_lag_seconds (10.0)",
    ),
    "unknown store scheme": (
        "stores: [{url: 'ftp://host/x'}]",
        "stores.0.url: store URL 'ftp://host/x': unknown scheme",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_is_one_line_and_exit_1(case: str, tmp_path: Path) -> None:
    text, problem = BAD_CONFIGS[case]
    path = tmp_path / "metrics.yaml"
    path.write_text(text)
    done = run_cli("metrics", "--config", str(path), "--once", env=NO_PREFECT)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    if case == "not yaml":
        assert done.stderr.startswith(f"siprec-backup: error: {path} {problem}")
    else:
        assert done.stderr.startswith(f"siprec-backup: error: {path}: {problem}"), done.stderr
    assert "s3cret-pw" not in done.stderr


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text("stores: [{url: /}]\n")
    cases = {
        (): "give exactly one of --listen, --textfile or --once",
        ("--once", "--listen", "127.0.0.1:9187"): "give exactly one of --listen, --textfile "
        "or --once",
        ("--listen", "9187"): "--listen '9187': expected HOST:PORT, e.g. 127.0.0.1:9187",
    }
    for args, message in cases.items():
        done = run_cli("metrics", "--config", str(path), *args, env=NO_PREFECT)
        assert (done.returncode, done.stderr) == (1, f"siprec-backup: error: {message}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("metrics", "--config", str(path), "--listen", f"127.0.0.1:{port}")
    assert (busy.returncode, busy.stderr) == (
        1,
        f"siprec-backup: error: cannot listen on 127.0.0.1:{port}: Address already in use\n",
    )
    missing = run_cli("metrics", "--config", str(tmp_path / "none.yaml"), "--once", env=NO_PREFECT)
    assert missing.returncode == 1
    assert missing.stderr == (
        f"siprec-backup: error: cannot read {tmp_path / 'none.yaml'}: No such file or directory\n"
    )
    with pytest.raises(ConfigurationError, match="catalog TTL must be >= 0"):
        MetricsCollector(load_config(path), catalog_ttl=-1)


def test_platform_reads_the_same_from_prefect_blocks(lab: LabState) -> None:
    """``--platform``: the lab platform's replication cluster blocks and its storage block."""
    from deployments import lab_blocks  # Prefect is needed here only

    blocks = lab_blocks.save_lab_blocks(lab)
    manifest = run_backup(
        RedisSource(lab.redis().target()),
        LocalStore(blocks.store_dir),
        MasterKey.generate("mx-platform-key"),
        cluster=lab_blocks.CLUSTER,
        source_name="siprec-redis",
        prefix=lab_blocks.STORE_PREFIX,
    )
    env = {"PREFECT_API_URL": lab.prefect_api_url}
    done = run_cli("metrics", "--platform", lab_blocks.PLATFORM, "--once", env=env)
    assert done.returncode == 0, done.stderr
    got = samples(done.stdout)
    for cluster in lab_blocks.REPLICATION:
        healthy = [
            k for k, v in got.items() if f'cluster="{cluster}"' in k and 'status="healthy"' in k
        ]
        assert len(healthy) == 2 and all(got[k] == 1 for k in healthy), done.stdout
    assert got[f'siprec_catalog_up{{store="{blocks.storage}"}}'] == 1
    labels = f'{{cluster="{lab_blocks.CLUSTER}",source="siprec-redis"}}'
    assert got[f"siprec_backup_last_success_timestamp_seconds{labels}"] >= (
        int(manifest.finished_at.timestamp())
    )
    assert_no_secret(lab, done.stdout, done.stderr)

    missing = run_cli("metrics", "--platform", "no-such-platform", "--once", env=env)
    assert missing.returncode == 1
    assert len(missing.stderr.splitlines()) == 1, missing.stderr
    assert "no-such-platform" in missing.stderr
