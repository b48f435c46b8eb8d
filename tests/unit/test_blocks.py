"""Block types: documented like prefect-aws's (standard suite), validated, secrets masked."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks import (
    AlertWebhook,
    AwsCredentials,
    AwsElbTargetGroups,
    AzureBlobStorage,
    AzureCredentials,
    AzureDnsZone,
    AzureLoadBalancer,
    BindDnsZone,
    BlueGreenCutover,
    CloudDnsZone,
    CloudflareCredentials,
    CloudflareDnsZone,
    EncryptionKey,
    FailoverCluster,
    GcpBackendServices,
    GcpCredentials,
    GCSStorage,
    HAProxyLoadBalancer,
    LocalStorage,
    MySQLDatabase,
    NginxLoadBalancer,
    NginxPlusLoadBalancer,
    PagerDutyEvents,
    Platform,
    PostgresDatabase,
    RecordingsDirectory,
    RedisServer,
    ReplicationCluster,
    Route53Zone,
    S3Storage,
    SmtpEmail,
    SshHost,
)
from blocks.replication import ReplicationNodeConfig

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


class TestBlocksFollowTheStandard(BlockStandardTestSuite):
    @pytest.fixture(
        params=[
            AlertWebhook,
            AwsCredentials,
            AwsElbTargetGroups,
            AzureBlobStorage,
            AzureCredentials,
            AzureDnsZone,
            AzureLoadBalancer,
            BindDnsZone,
            BlueGreenCutover,
            CloudDnsZone,
            CloudflareCredentials,
            CloudflareDnsZone,
            EncryptionKey,
            FailoverCluster,
            GCSStorage,
            GcpBackendServices,
            GcpCredentials,
            HAProxyLoadBalancer,
            LocalStorage,
            MySQLDatabase,
            NginxLoadBalancer,
            NginxPlusLoadBalancer,
            PagerDutyEvents,
            Platform,
            PostgresDatabase,
            RecordingsDirectory,
            RedisServer,
            ReplicationCluster,
            Route53Zone,
            S3Storage,
            SmtpEmail,
            SshHost,
        ]
    )
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        block_type: type[Block] = request.param
        return block_type

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """We ship no logo (the suite would download one); the slug is ours and stable."""
        assert block._block_type_slug is not None
        assert block._block_type_slug.startswith("siprec-backup-")


def test_postgres_block_builds_the_engine_target() -> None:
    block = PostgresDatabase(
        host="db", port=5433, user="u", password=SecretStr("pw"), dbname="siprec"
    )
    target = block.target("other")
    assert (target.host, target.port, target.dbname, target.sslmode) == (
        "db",
        5433,
        "other",
        "prefer",
    )
    assert "pw" not in repr(target) and "pw" not in repr(block)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"port": 70000}, "port"),
        ({"sslmode": "maybe"}, "sslmode"),
        ({"host": ""}, "host"),
    ],
)
def test_invalid_postgres_fields_are_named(fields: dict[str, object], field_name: str) -> None:
    base: dict[str, object] = {"host": "db", "user": "u", "dbname": "d"}
    with pytest.raises(ValidationError) as caught:
        PostgresDatabase(**{**base, **fields})
    assert [e["loc"][0] for e in caught.value.errors()] == [field_name]


def test_invalid_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        EncryptionKey(key_id="k", key=SecretStr("too-short-secret"))
    assert "too-short-secret" not in str(caught.value)


def test_key_block_keyring_includes_retired_keys() -> None:
    block = EncryptionKey(
        key_id="new", key=SecretStr(KEY_HEX), retired_keys={"old": SecretStr(KEY_HEX[::-1])}
    )
    assert block.master_key().key_id == "new"
    assert set(block.keyring().key_ids) == {"new", "old"}
    assert KEY_HEX not in repr(block)


def test_local_storage_requires_an_absolute_path() -> None:
    with pytest.raises(ValidationError, match="path must be absolute"):
        LocalStorage(path="relative/dir")


def _cluster(**fields: object) -> ReplicationCluster:
    base: dict[str, object] = {
        "cluster": "pg",
        "kind": "postgres",
        "nodes": [
            ReplicationNodeConfig(name="p", role="primary", block="pg-primary"),
            ReplicationNodeConfig(name="r", role="replica", block="pg-replica"),
        ],
    }
    return ReplicationCluster(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_lag_bytes": -1}, "max_lag_bytes"),
        ({"max_lag_seconds": 60, "broken_lag_seconds": 10}, "broken_lag_seconds"),
        ({"flap_history": 4, "flap_threshold": 4}, "flap_threshold"),
        ({"kind": "oracle"}, "kind"),
        ({"cluster": "a b"}, "cluster"),
        ({"nodes": []}, "nodes"),
        (
            {
                "nodes": [
                    ReplicationNodeConfig(name="p", role="primary", block="x"),
                    ReplicationNodeConfig(name="p", role="replica", block="y"),
                ]
            },
            "nodes",
        ),
        (
            {
                "nodes": [
                    ReplicationNodeConfig(
                        name="p", role="primary", block="x", heartbeat_table="m.hb"
                    )
                ]
            },
            "heartbeat_table",
        ),
    ],
)
def test_invalid_replication_cluster_names_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _cluster(**fields)
    assert named in str(caught.value)


def test_replication_cluster_thresholds_and_tracker_settings() -> None:
    cluster = _cluster(max_lag_bytes=100, broken_lag_seconds=90, reminder_minutes=5)
    thresholds = cluster.thresholds()
    assert (thresholds.max_lag_bytes, thresholds.broken_lag_seconds) == (100, 90)
    settings = cluster.tracker_settings()
    assert settings["reminder_interval"].total_seconds() == 300
    assert (settings["history_size"], settings["flap_threshold"]) == (20, 4)


def test_alert_channel_blocks_keep_secrets_out_of_repr() -> None:
    hook = AlertWebhook(url="https://alerts.example/in", secret=SecretStr("s" * 20 + "leak"))
    pager = PagerDutyEvents(routing_key=SecretStr("routing-leak"))
    mail = SmtpEmail(
        host="smtp.example",
        sender="a@example",
        recipients=["b@example"],
        username="u",
        password=SecretStr("mail-leak"),
    )
    for block, channel in (
        (hook, hook.channel()),
        (pager, pager.channel()),
        (mail, mail.channel()),
    ):
        assert "leak" not in repr(block) and "leak" not in repr(channel)
    with pytest.raises(ValidationError, match="url"):
        AlertWebhook(url="ftp://x", secret=SecretStr("s" * 20))
    with pytest.raises(ValidationError, match="recipients"):
        SmtpEmail(host="h", sender="a@example", recipients=["nobody"])


def test_gcp_removal_drain_needs_the_groups_to_attach_again() -> None:
    with pytest.raises(ValidationError, match="drain_mode removal needs groups"):
        GcpBackendServices(backend_services=["db"], drain_mode="removal")
    block = GcpBackendServices(
        backend_services=["db"], drain_mode="removal", groups={"n2": "zones/z/instanceGroups/n2"}
    )
    assert block.load_balancer().drain_mode == "removal"
