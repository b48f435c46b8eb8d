"""An OpenSSH server for the lab: the host the SSH lever's tests log in to.

``sshd`` listens on a free 127.0.0.1 port with its own host key, accepts only the lab's client
key (generated into ``<lab>/sshd``, file mode 0600), and logs in the user running the lab (root
in CI, which needs ``/run/sshd``). The known_hosts line pinning the host key is public data and
kept in lab.json; the client key stays a file that only its path points to.

systemd cannot run in the lab, so the lab also writes ``<lab>/sshd/bin/systemctl``, a stand-in
the service-manager tests point at (see :func:`write_fake_systemctl`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.remote.ssh import SshConfig

LOOPBACK = "127.0.0.1"
#: The unit the systemctl stand-in reports as active; every other unit is inactive.
FAKE_ACTIVE_UNIT = "siprec-fake-active.service"

_FAKE_SYSTEMCTL = f"""#!/bin/sh
# Lab stand-in for systemctl: systemd cannot run in the lab, so the service-manager tests run
# this instead. It prints its arguments one per line (the tests check what arrived, quoting
# included) and answers is-active/status like systemctl: {FAKE_ACTIVE_UNIT} is active
# (exit 0), every other unit inactive (exit 3). Other actions succeed.
printf '%s\\n' "$@"
action="$1"
for unit in "$@"; do :; done
case "$action" in
  is-active|status)
    if [ "$unit" = "{FAKE_ACTIVE_UNIT}" ]; then echo active; exit 0; fi
    echo inactive; exit 3 ;;
esac
exit 0
"""


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach the lab's sshd. The key file's content is never held here, only its path."""

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: str
    authorized_keys: Path
    sshd_config: Path
    systemctl: Path

    def ssh_config(self) -> SshConfig:
        """An :class:`SshConfig` for the lab user with the lab's client key (read now); vary it
        with :func:`dataclasses.replace`."""
        return SshConfig(
            host=self.host,
            port=self.port,
            username=self.user,
            private_key=self.client_key.read_text(),
            known_hosts=self.known_hosts,
        )

    @classmethod
    def from_record(cls, record: ServiceRecord) -> SshEndpoint:
        """Build the endpoint from lab.json."""
        if record.host is None or record.port is None:
            raise LabError(f"lab.json: {record.name} has no address")
        return cls(
            host=record.host,
            port=record.port,
            user=record.fact("user"),
            client_key=Path(record.fact("client_key")),
            known_hosts=record.fact("known_hosts"),
            authorized_keys=Path(record.fact("authorized_keys")),
            sshd_config=Path(record.fact("sshd_config")),
            systemctl=Path(record.fact("systemctl")),
        )


def find_sshd() -> Path:
    """``$SIPREC_LAB_SSHD`` or /usr/sbin/sshd."""
    found = os.environ.get("SIPREC_LAB_SSHD") or shutil.which("sshd", path="/usr/sbin:/usr/bin")
    if not found or not os.access(found, os.X_OK):
        raise LabError(
            "sshd not found: install it (Debian: apt-get install openssh-server) or set "
            "SIPREC_LAB_SSHD"
        )
    return Path(found)


def write_fake_systemctl(path: Path) -> Path:
    """Write the systemctl stand-in (executable) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_FAKE_SYSTEMCTL)
    path.chmod(0o755)
    return path


class Sshd(Service):
    """OpenSSH's sshd on a loopback port: key-only login for the lab user, SFTP enabled."""

    name = "sshd"
    group = "ssh"

    def _dir(self, root: Path) -> Path:
        return root / "sshd"

    def reset(self, root: Path) -> None:
        """Remove what an interrupted first start left."""
        shutil.rmtree(self._dir(root), ignore_errors=True)

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Generate keys on first start, write the config, start sshd, wait for its banner."""
        sshd = find_sshd()
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        base = self._dir(ctx.root)
        base.mkdir(parents=True, exist_ok=True)
        log = ctx.log(self.name)
        host_key, client_key = base / "host_key", base / "client_key"
        for key in (host_key, client_key):
            if not key.exists():
                _process.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"siprec-lab-{key.name}",
                     "-f", key],
                    server=self.name,
                    log=log,
                    timeout=30.0,
                )  # fmt: skip
        client_key.chmod(0o600)
        authorized = base / "authorized_keys"
        if not authorized.exists():
            authorized.write_text((base / "client_key.pub").read_text())
        host_public = (base / "host_key.pub").read_text().split()
        known_hosts = f"[{LOOPBACK}]:{port} {host_public[0]} {host_public[1]}"
        config = base / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {LOOPBACK}:{port}",
                    f"HostKey {host_key}",
                    f"PidFile {base / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",  # the lab lives under /tmp, which StrictModes rejects
                    "MaxSessions 32",
                    "Subsystem sftp internal-sftp",
                ]
            )
            + "\n"
        )
        systemctl = write_fake_systemctl(base / "bin" / "systemctl")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        proc = _process.spawn([sshd, "-D", "-e", "-f", config], log=log, cwd=base)
        record = ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=log,
            facts={
                "user": pwd.getpwuid(os.geteuid()).pw_name,
                "client_key": str(client_key),
                "known_hosts": known_hosts,
                "authorized_keys": str(authorized),
                "sshd_config": str(config),
                "systemctl": str(systemctl),
            },
        )
        record.started_ticks = self.launch(ctx, proc, lambda: _banner(port), timeout=20.0)
        return record

    def is_ready(self, record: ServiceRecord) -> bool:
        """sshd answers with its SSH banner."""
        return record.port is not None and _banner(record.port)


def _banner(port: int) -> bool:
    """Whether 127.0.0.1:``port`` answers with an SSH-2.0 identification string."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False
