"""``siprec-backup blocks apply FILE.yaml``: lever blocks from a configuration file.

The file has the seed's shape; each section is one mapping or a list of them::

    load_balancer:                  # or a list; type: haproxy | nginx | nginx_plus | aws_elb ...
      name: lb                      # block name (default: load-balancer)
      type: haproxy
      endpoint: http://haproxy:8404/stats
      runtime_api: haproxy:9999
      username: admin
      password: ${HAPROXY_STATS_PASSWORD}
    dns:                            # provider: bind | route53 | cloudflare | ...
      name: dns                     # (default: dns)
      provider: bind
      zone: example.com
      nameservers: ["ns1.example.com:53", "ns2.example.com:53"]
      credentials: {key_name: ddns-key, algorithm: hmac-sha256, secret: ${TSIG_SECRET}}

A cloud entry's ``credentials`` mapping holds the fields of its provider's credentials block
(``region``, ``access_key_id``, ``secret_access_key``... for AWS; ``api_token`` for Cloudflare),
saved inside the entry's block. As in the seed, an ``aws_elb`` entry's ``endpoint`` is its
region (or an endpoint URL).
    ssh:                            # a list of hosts; name required
      - name: db1
        host: db1.example.com
        username: siprec
        private_key_file: /etc/siprec/id_ed25519      # or private_key: ${DB1_SSH_KEY}
        known_hosts_file: /etc/siprec/known_hosts     # or known_hosts: "db1 ssh-ed25519 AAAA..."

Values ``${VAR}`` come from the environment and secrets may only be written that way (see
:mod:`siprec_backup.config_file`). Every problem is one ConfigurationError line naming the file,
the field and the problem; nothing is saved unless the whole file is valid.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import ValidationError

from blocks.dns import DNS_ZONE_TYPES, BindDnsZone
from blocks.load_balancers import LOAD_BALANCER_TYPES
from blocks.ssh import SshHost
from siprec_backup.config_file import load_config_file, sections
from siprec_backup.errors import ConfigurationError

#: Prefect block document names: lowercase letters, digits and dashes.
BLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: Sections the file may have (anything else is a typo worth an error).
SECTIONS = ("load_balancer", "dns", "ssh")
#: ``credentials`` fields of a BIND zone -> the block's fields.
BIND_CREDENTIALS = {"key_name": "key_name", "algorithm": "key_algorithm", "secret": "key_secret"}


@dataclass(frozen=True)
class PlannedBlock:
    """One block the file describes: where it is in the file, its name, the validated block."""

    where: str
    name: str
    block: Block

    @property
    def kind(self) -> str:
        """The block type's name, e.g. ``SIPREC Backup HAProxy``."""
        return type(self.block).get_block_type_name()


def read_blocks(
    path: Path, environ: Mapping[str, str] | None = None, only: Collection[str] = SECTIONS
) -> list[PlannedBlock]:
    """Every block of the file (or of its sections ``only``), validated; nothing saved."""
    data = load_config_file(path, environ, known=SECTIONS, only=only)
    planned: list[PlannedBlock] = []
    for section, default_name, build in (
        ("load_balancer", "load-balancer", _load_balancer),
        ("dns", "dns", _dns),
        ("ssh", None, _ssh),
    ):
        items = sections(data, section, path)
        for i, item in enumerate(items):
            where = f"{section}[{i}]" if isinstance(data[section], list) else section
            fields = dict(item)
            name = fields.pop("name", None) or default_name
            if name is None:
                raise ConfigurationError(f"{path}: {where}.name: required")
            if not isinstance(name, str) or not BLOCK_NAME.match(name):
                raise ConfigurationError(
                    f"{path}: {where}.name: {name!r} must be lowercase letters, digits and '-'"
                )
            planned.append(PlannedBlock(where, name, build(path, where, fields)))
    seen: set[tuple[str, str]] = set()
    for block in planned:
        key = (block.kind, block.name)
        if key in seen:
            raise ConfigurationError(f"{path}: {block.where}.name: {block.name!r} is used twice")
        seen.add(key)
    return planned


def apply_blocks(planned: list[PlannedBlock]) -> list[tuple[PlannedBlock, str]]:
    """Save every block (overwriting one of the same type and name): ``created``/``updated``."""
    done = []
    for item in planned:
        try:
            type(item.block).load(item.name)
            action = "updated"
        except ValueError:
            action = "created"
        item.block.save(item.name, overwrite=True)
        done.append((item, action))
    return done


def _validated(path: Path, where: str, cls: type[Block], fields: dict[str, Any]) -> Block:
    """The block built from ``fields``; unknown fields are refused (Prefect blocks allow them)."""
    for field in fields:
        if field not in cls.model_fields:
            raise ConfigurationError(f"{path}: {where}.{field}: unknown field")
    try:
        return cls(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        at = f"{where}.{field}" if field else where  # a model validator names no field
        raise ConfigurationError(f"{path}: {at}: {error['msg']}") from None


def _load_balancer(path: Path, where: str, fields: dict[str, Any]) -> Block:
    kind = fields.pop("type", None)
    if kind not in LOAD_BALANCER_TYPES:
        raise ConfigurationError(
            f"{path}: {where}.type: {kind!r} is not one of {', '.join(LOAD_BALANCER_TYPES)}"
        )
    if kind == "nginx" and "endpoint" in fields:
        raise ConfigurationError(
            f"{path}: {where}.endpoint: open-source nginx is driven through its upstream "
            "include files (includes, pid_file); for the NGINX Plus API write type: nginx_plus"
        )
    if kind == "aws_elb" and "endpoint" in fields:
        endpoint = fields.pop("endpoint")
        key = "endpoint_url" if str(endpoint).startswith(("http://", "https://")) else "region"
        credentials = fields.setdefault("credentials", {})
        if isinstance(credentials, dict):
            credentials.setdefault(key, endpoint)
    return _validated(
        path,
        where,
        LOAD_BALANCER_TYPES[kind],
        _nested_credentials(path, where, LOAD_BALANCER_TYPES[kind], fields),
    )


def _nested_credentials(
    path: Path, where: str, cls: type[Block], fields: dict[str, Any]
) -> dict[str, Any]:
    """A cloud block's ``credentials`` mapping made into its credentials block."""
    field = cls.model_fields.get("credentials")
    credentials = fields.get("credentials")
    if field is None or credentials is None:
        return fields
    if not isinstance(credentials, dict):
        raise ConfigurationError(f"{path}: {where}.credentials: expected a mapping")
    kind = field.annotation
    assert isinstance(kind, type) and issubclass(kind, Block)
    fields["credentials"] = _validated(path, f"{where}.credentials", kind, dict(credentials))
    return fields


def _dns(path: Path, where: str, fields: dict[str, Any]) -> Block:
    provider = fields.pop("provider", None)
    if provider not in DNS_ZONE_TYPES:
        raise ConfigurationError(
            f"{path}: {where}.provider: {provider!r} is not one of {', '.join(DNS_ZONE_TYPES)}"
        )
    if provider != "bind":
        cls = DNS_ZONE_TYPES[provider]
        return _validated(path, where, cls, _nested_credentials(path, where, cls, fields))
    credentials = fields.pop("credentials", None) or {}
    if not isinstance(credentials, dict):
        raise ConfigurationError(f"{path}: {where}.credentials: expected a mapping")
    for key, value in credentials.items():
        if key not in BIND_CREDENTIALS:
            raise ConfigurationError(
                f"{path}: {where}.credentials.{key}: unknown field "
                f"(use {', '.join(BIND_CREDENTIALS)})"
            )
        fields[BIND_CREDENTIALS[key]] = value
    return _validated(path, where, BindDnsZone, fields)


def _ssh(path: Path, where: str, fields: dict[str, Any]) -> Block:
    for field in ("private_key", "known_hosts"):
        file_field = f"{field}_file"
        if file_field in fields:
            if field in fields:
                raise ConfigurationError(f"{path}: {where}: give {field} or {file_field}, not both")
            fields[field] = _read_small_file(path, f"{where}.{file_field}", fields.pop(file_field))
    return _validated(path, where, SshHost, fields)


def _read_small_file(path: Path, where: str, name: object) -> str:
    """A key or known_hosts file named in the configuration (a few KiB at most)."""
    if not isinstance(name, str):
        raise ConfigurationError(f"{path}: {where}: expected a file path")
    file = Path(name).expanduser()
    try:
        if file.stat().st_size > 1 << 20:
            raise ConfigurationError(f"{path}: {where}: {file} is larger than 1 MiB")
        return file.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{path}: {where}: cannot read {file}: {exc.strerror}") from None
