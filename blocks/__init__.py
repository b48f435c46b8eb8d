"""Prefect Block types: configuration and credentials, each building its engine object."""

from blocks.encryption_key import EncryptionKey
from blocks.local_storage import LocalStorage
from blocks.postgres import PostgresDatabase

__all__ = ["EncryptionKey", "LocalStorage", "PostgresDatabase"]
