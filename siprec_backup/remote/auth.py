"""The two credentials of an SSH connection, read from text held in a block (never from files,
``~/.ssh`` or an agent): the client's private key and the known_hosts lines that pin the server.

Messages name the problem and the line number, never key material.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import paramiko

from siprec_backup.errors import ConfigurationError

#: Key classes tried in order; paramiko 4 dropped DSA, and so do we.
KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)
_OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_END = "-----END OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\x00"


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """The ed25519, ECDSA or RSA private key in ``text`` (OpenSSH or PEM format).

    Raises ConfigurationError if the key is encrypted and no passphrase was given, if the
    passphrase is wrong, or if the text is not a supported private key.
    """
    if not text.strip():
        raise ConfigurationError("the SSH private key is empty")
    encrypted = is_encrypted(text)
    if encrypted and not passphrase:
        raise ConfigurationError("the SSH private key is encrypted: a passphrase is required")
    for cls in KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase or None)
        except paramiko.PasswordRequiredException:
            raise ConfigurationError(
                "the SSH private key is encrypted: a passphrase is required"
            ) from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    if encrypted:
        raise ConfigurationError("the SSH private key could not be decrypted: wrong passphrase?")
    raise ConfigurationError(
        "the SSH private key is not a valid ed25519, ECDSA or RSA private key "
        "(OpenSSH or PEM format)"
    )


def is_encrypted(text: str) -> bool:
    """Whether a private key's text says it is encrypted (OpenSSH cipher or PEM headers)."""
    if "Proc-Type: 4,ENCRYPTED" in text or "BEGIN ENCRYPTED PRIVATE KEY" in text:
        return True
    start, end = text.find(_OPENSSH_BEGIN), text.find(_OPENSSH_END)
    if start < 0 or end < start:
        return False
    body = "".join(text[start + len(_OPENSSH_BEGIN) : end].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return False
    if not blob.startswith(_OPENSSH_MAGIC):
        return False
    rest = blob[len(_OPENSSH_MAGIC) :]
    if len(rest) < 4:
        return False
    length = int.from_bytes(rest[:4], "big")
    return rest[4 : 4 + length] != b"none"


_MARKER = re.compile(r"^@\S+")


def parse_known_hosts(text: str, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """Host keys from known_hosts text: plain, comma-separated, hashed (``|1|...``) and
    ``[host]:port`` entries; blank lines and ``#`` comments are ignored.

    Markers (``@cert-authority``, ``@revoked``) are refused rather than silently ignored: a
    revoked key must never be trusted by accident. Raises ConfigurationError naming the line.
    The keys are added to ``into`` (an SSHClient's table) when given.
    """
    keys = paramiko.HostKeys() if into is None else into
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _MARKER.match(line):
            marker = line.split()[0]
            raise ConfigurationError(f"known_hosts line {lineno}: {marker} is not supported")
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            raise ConfigurationError(
                f"known_hosts line {lineno}: the key is not valid ({type(exc).__name__})"
            ) from None
        if entry is None or entry.key is None:
            raise ConfigurationError(
                f"known_hosts line {lineno}: expected 'host[,host...] key-type base64-key' "
                "with a supported key type (ssh-ed25519, ecdsa-sha2-*, ssh-rsa)"
            )
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if not keys.keys():
        raise ConfigurationError("known_hosts holds no host key: the server cannot be verified")
    return keys


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names ``host:port``: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"
