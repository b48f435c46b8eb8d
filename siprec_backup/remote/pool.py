"""Connection reuse within a flow run: one connected client per (host, port, user).

A failover talks to the same hosts many times (fence, check, promote, verify); reconnecting
each time costs a key exchange and adds a failure point. The pool hands out the same connected
:class:`SshClient`, reconnects one whose connection dropped, and closes them all at the end.
"""

from __future__ import annotations

import threading
from types import TracebackType

from siprec_backup.errors import ConfigurationError
from siprec_backup.remote.audit import AuditSink
from siprec_backup.remote.ssh import SshClient, SshConfig

PoolKey = tuple[str, int, str]


class SshPool:
    """Connected clients keyed by host, port and user; thread-safe."""

    def __init__(self, *, actor: str = "siprec-backup", audit: AuditSink | None = None) -> None:
        self.actor = actor
        self.audit = audit
        self._clients: dict[PoolKey, SshClient] = {}
        self._lock = threading.Lock()

    def get(self, config: SshConfig) -> SshClient:
        """The connected client for ``config``'s host, port and user (connecting on first use).

        A second config for the same endpoint must be the same config: two different keys or
        known_hosts for one endpoint are a configuration mistake, not a reason to reconnect.
        """
        key = (config.host, config.port, config.username)
        with self._lock:
            client = self._clients.get(key)
            if client is not None and client.config != config:
                raise ConfigurationError(
                    f"ssh {config.target}: two different configurations for the same host"
                )
            if client is None:
                client = SshClient(config, actor=self.actor, audit=self.audit)
                self._clients[key] = client
            return client.connect()  # no-op while connected; reconnects a dropped connection

    def __len__(self) -> int:
        return len(self._clients)

    def close_all(self) -> None:
        """Close every connection (idempotent)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> SshPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_all()
