"""BIND 9.18 primary and secondary for the lab: one zone, TSIG-signed dynamic updates.

The primary serves :data:`ZONE` from a zone file (SOA, two NS records, ``db`` and ``app``
addresses) and accepts RFC 2136 updates signed with the lab's TSIG key; it NOTIFYs the secondary
at once (``notify-delay 0``: the default 5 s would dominate every propagation measurement), and
allows zone transfers to holders of the key only. The secondary transfers the zone with the key.
Both listen on 127.0.0.1 only, with ``recursion no`` and ``controls { }`` (no rndc key read from
/etc/bind), and keep pid, session key and journals in their own directory.

The TSIG secret lives in the lab's secrets and reaches named only through a 0600 ``key.conf``
included by ``named.conf``: never on a command line, in facts or in logs. As root, named runs
with ``-u bind`` and its directory belongs to that account (it writes the ``.jnl`` journal).
"""

from __future__ import annotations

import base64
import os
import pwd
import secrets as _secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dns.name

from siprec_backup.dns import BindDns, Nameserver
from siprec_backup.dns.propagation import soa_serial
from siprec_backup.errors import DnsError, LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord

TSIG_SECRET = "bind_tsig_secret"  # noqa: S105 - the key, not the secret
ZONE = "siprec.lab."
KEY_NAME = "ddns-key"
KEY_ALGORITHM = "hmac-sha256"
LOOPBACK = "127.0.0.1"
#: The account named drops to when the lab runs as root (Debian's bind9 package creates it).
BIND_USER = "bind"


def new_tsig_secret() -> str:
    """A fresh base64 HMAC-SHA256 secret, as ``tsig-keygen`` makes."""
    return base64.b64encode(_secrets.token_bytes(32)).decode()


def zone_text(serial: int = 1) -> str:
    """The lab zone's initial content (in-zone NS names resolve to the loopback)."""
    return f"""$ORIGIN {ZONE}
$TTL 300
@    IN SOA ns1 hostmaster ( {serial} 60 10 86400 30 )
@    IN NS  ns1
@    IN NS  ns2
ns1  IN A   {LOOPBACK}
ns2  IN A   {LOOPBACK}
db   IN A   10.0.0.1
app  IN A   10.0.0.10
"""


def _options(directory: Path, port: int, extra: str) -> str:
    return f"""options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    listen-on port {port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
{extra}}};
controls {{ }};
"""


def primary_config(directory: Path, port: int, notify_ports: list[int]) -> str:
    """``named.conf`` of a primary that accepts signed updates and notifies ``notify_ports``."""
    if notify_ports:
        targets = " ".join(f"{LOOPBACK} port {p};" for p in notify_ports)
        notify = f"    notify explicit;\n    notify-delay 0;\n    also-notify {{ {targets} }};\n"
    else:
        notify = "    notify no;\n"
    extra = notify + f'    allow-transfer {{ key "{KEY_NAME}"; }};\n'
    return (
        f'include "{directory}/key.conf";\n'
        + _options(directory, port, extra)
        + f'zone "{ZONE}" {{ type primary; file "db.zone";'
        + f" update-policy {{ grant {KEY_NAME} zonesub ANY; }}; }};\n"
    )


def secondary_config(directory: Path, port: int, primary_port: int) -> str:
    """``named.conf`` of a secondary transferring the zone from the primary with the key."""
    return (
        f'include "{directory}/key.conf";\n'
        + _options(directory, port, "    notify no;\n")
        + f'zone "{ZONE}" {{ type secondary; file "db.zone.bk";'
        + f' primaries {{ {LOOPBACK} port {primary_port} key "{KEY_NAME}"; }}; }};\n'
    )


def static_config(directory: Path, port: int) -> str:
    """``named.conf`` of a lone primary that takes no updates (a stray, stale nameserver)."""
    return (
        _options(directory, port, "    notify no;\n")
        + f'zone "{ZONE}" {{ type primary; file "db.zone"; }};\n'
    )


def _bind_user() -> str | None:
    """``bind`` when running as root and the account exists, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(BIND_USER)
    except KeyError:
        return None
    return BIND_USER


def prepare_dir(directory: Path, config: str, *, secret: str | None, zone: str | None) -> Path:
    """Write ``named.conf``, the 0600 ``key.conf`` and the zone file into ``directory`` (owned
    by the account named runs as); returns the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    if secret is not None:
        key = f'key "{KEY_NAME}" {{ algorithm {KEY_ALGORITHM}; secret "{secret}"; }};\n'
        fd = os.open(directory / "key.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
    if zone is not None:
        (directory / "db.zone").write_text(zone)
    conf = directory / "named.conf"
    conf.write_text(config)
    user = _bind_user()
    if user is not None:
        for path in [directory, *directory.iterdir()]:
            shutil.chown(path, user, user)
    return conf


def find_named() -> Path:
    """``$SIPREC_LAB_NAMED`` or named on PATH (or /usr/sbin/named)."""
    found = os.environ.get("SIPREC_LAB_NAMED") or shutil.which("named") or "/usr/sbin/named"
    if not os.access(found, os.X_OK):
        raise LabError(
            "named not found: install it (Debian: apt-get install bind9) or set SIPREC_LAB_NAMED"
        )
    return Path(found)


def spawn_named(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start named in the foreground (``-g``: logs to ``log``) on one worker thread."""
    user = _bind_user()
    argv: list[str | os.PathLike[str]] = [find_named(), "-g", "-n", "1", "-c", conf]
    if user is not None:
        argv += ["-u", user]
    return _process.spawn(argv, log=log, cwd=conf.parent)


def serves_zone(port: int) -> bool:
    """Whether a named on 127.0.0.1:``port`` answers the zone's SOA authoritatively."""
    try:
        soa_serial(Nameserver(LOOPBACK, port), dns.name.from_text(ZONE), 1.0)
    except DnsError:
        return False
    return True


@dataclass
class BindEndpoint:
    """How to reach one lab nameserver and update the zone. ``key_secret`` is never shown."""

    host: str
    port: int
    zone: str
    key_name: str
    key_algorithm: str
    key_secret: str = field(repr=False)
    role: str = "primary"

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    def client(self, *, nameservers: tuple[str, ...] = (), timeout: float = 5.0) -> BindDns:
        """The engine's updater of the zone through this server (the primary)."""
        return BindDns(
            zone=self.zone,
            primary=self.address,
            key_name=self.key_name,
            key_algorithm=self.key_algorithm,
            key_secret=self.key_secret,
            timeout=timeout,
            nameservers=nameservers,
        )

    @classmethod
    def from_record(cls, record: ServiceRecord, secret: str) -> BindEndpoint:
        """Build the endpoint from a lab.json record and the lab's TSIG secret."""
        if record.host is None or record.port is None:
            raise LabError(f"lab.json: {record.name} has no address")
        return cls(
            host=record.host,
            port=record.port,
            zone=record.fact("zone"),
            key_name=record.fact("key_name"),
            key_algorithm=record.fact("key_algorithm"),
            key_secret=secret,
            role=record.fact("role"),
        )


class _BindService(Service):
    """A named on a free loopback port with its own directory under ``<lab>/bind``."""

    group = "bind"
    role: str

    def _dir(self, root: Path) -> Path:
        return root / "bind" / self.name

    def reset(self, root: Path) -> None:
        """Remove what an interrupted first start left."""
        shutil.rmtree(self._dir(root), ignore_errors=True)

    def _config(self, ctx: LabContext, directory: Path, port: int) -> str:
        raise NotImplementedError

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Write the configuration, start named and wait until it serves the zone."""
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        secret = ctx.secrets.get(TSIG_SECRET)
        if not secret:
            raise LabError(f"{self.name}: the lab has no TSIG secret")
        directory = self._dir(ctx.root)
        first = not (directory / "named.conf").exists()
        conf = prepare_dir(
            directory,
            self._config(ctx, directory, port),
            secret=secret,
            zone=zone_text() if first and self.role == "primary" else None,
        )
        proc = spawn_named(conf, ctx.log(self.name))
        record = ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            facts={
                "role": self.role,
                "zone": ZONE,
                "key_name": KEY_NAME,
                "key_algorithm": KEY_ALGORITHM,
                "key_secret": f"lab.json secrets.{TSIG_SECRET}",
                "data_dir": str(directory),
            },
        )
        record.started_ticks = self.launch(ctx, proc, lambda: serves_zone(port), timeout=30.0)
        return record

    def is_ready(self, record: ServiceRecord) -> bool:
        """named answers the zone's SOA authoritatively."""
        return record.port is not None and serves_zone(record.port)


class BindPrimary(_BindService):
    """The zone's primary: takes the signed updates, notifies the secondary."""

    name = "bind-primary"
    role = "primary"

    def _config(self, ctx: LabContext, directory: Path, port: int) -> str:
        secondary = ctx.ports.get(BindSecondary.name)
        return primary_config(directory, port, [secondary] if secondary else [])


class BindSecondary(_BindService):
    """A secondary that follows the primary by NOTIFY and IXFR, signed with the key."""

    name = "bind-secondary"
    role = "secondary"
    after = ("bind-primary",)

    def _config(self, ctx: LabContext, directory: Path, port: int) -> str:
        primary = ctx.record(BindPrimary.name)
        assert primary.port is not None
        return secondary_config(directory, port, primary.port)
