"""Prefect Block types: configuration and credentials, each building its engine object."""

from blocks.alerting import AlertWebhook, PagerDutyEvents, SmtpEmail, load_channels
from blocks.aws import AwsCredentials, AwsElbTargetGroups, Route53Zone
from blocks.azure import AzureCredentials, AzureDnsZone, AzureLoadBalancer
from blocks.azure_storage import AzureBlobStorage
from blocks.blue_green import BlueGreenCutover
from blocks.cloudflare import CloudflareCredentials, CloudflareDnsZone
from blocks.dns import BindDnsZone, load_dns_zone
from blocks.encryption_key import EncryptionKey
from blocks.failover import FailoverCluster
from blocks.gcp import CloudDnsZone, GcpBackendServices, GcpCredentials
from blocks.gcs_storage import GCSStorage
from blocks.load_balancers import (
    HAProxyLoadBalancer,
    NginxLoadBalancer,
    NginxPlusLoadBalancer,
    load_load_balancer,
)
from blocks.local_storage import LocalStorage
from blocks.mysql import MySQLDatabase
from blocks.platform import Platform
from blocks.postgres import PostgresDatabase
from blocks.recordings import RecordingsDirectory
from blocks.redis import RedisServer
from blocks.replication import ReplicationCluster, load_monitored
from blocks.s3_storage import S3Storage
from blocks.ssh import SshHost

__all__ = [
    "AlertWebhook",
    "AwsCredentials",
    "AwsElbTargetGroups",
    "AzureBlobStorage",
    "AzureCredentials",
    "AzureDnsZone",
    "AzureLoadBalancer",
    "BindDnsZone",
    "BlueGreenCutover",
    "CloudDnsZone",
    "CloudflareCredentials",
    "CloudflareDnsZone",
    "EncryptionKey",
    "FailoverCluster",
    "GCSStorage",
    "GcpBackendServices",
    "GcpCredentials",
    "HAProxyLoadBalancer",
    "LocalStorage",
    "MySQLDatabase",
    "NginxLoadBalancer",
    "NginxPlusLoadBalancer",
    "PagerDutyEvents",
    "Platform",
    "PostgresDatabase",
    "RecordingsDirectory",
    "RedisServer",
    "ReplicationCluster",
    "Route53Zone",
    "S3Storage",
    "SmtpEmail",
    "SshHost",
    "load_channels",
    "load_dns_zone",
    "load_load_balancer",
    "load_monitored",
]
