"""YAML configuration files with ``${VAR}`` taken from the environment.

Used by ``siprec-backup blocks apply`` (and the lever commands' ``--config``) for files in the
seed's shape::

    load_balancer:
      type: haproxy
      endpoint: http://haproxy-stats:8404
      username: admin
      password: ${HAPROXY_STATS_PASSWORD}

Secrets never sit in the file: a field whose name says it holds one (``password``, ``secret``,
``private_key``, ``token``...) must be written as exactly one ``${VAR}``, and the value comes from
the environment. Every problem is one :class:`ConfigurationError` line naming the file, the field
(as a dotted path such as ``dns.credentials.tsig_secret``) and the problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from siprec_backup.errors import ConfigurationError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ONE_VAR = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
#: Field names (or name endings) that hold secrets: their values must be one ``${VAR}``.
SECRET_FIELDS = (
    "password",
    "passphrase",
    "secret",
    "private_key",
    "token",
    "api_key",
    "secret_access_key",
    "service_account_info",
)


def is_secret_field(name: str) -> bool:
    """Whether a field of this name holds a secret (``tsig_secret``, ``api_token``...)."""
    lowered = name.lower()
    return any(lowered == s or lowered.endswith("_" + s) for s in SECRET_FIELDS)


def load_config_file(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    known: Collection[str] | None = None,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """The file's top-level mapping with every ``${VAR}`` replaced from the environment.

    ``known``: the sections a file may have (others are an error); ``only``: return just
    these sections (the others' variables need not be set).
    """
    env = os.environ if environ is None else environ
    try:
        with path.open() as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigurationError(f"{path}: invalid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: the file must hold a mapping of sections")
    unknown = sorted(str(key) for key in data if known is not None and key not in known)
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown section {unknown[0]!r}: use {', '.join(known or ())}"
        )
    if only is not None:
        data = {key: value for key, value in data.items() if key in only}
    expanded = _expand(data, path, "", env)
    assert isinstance(expanded, dict)
    return expanded


def _expand(value: Any, path: Path, where: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            field = f"{where}.{key}" if where else str(key)
            literal = not (isinstance(item, str) and _ONE_VAR.match(item))
            if is_secret_field(str(key)) and item is not None and literal:
                raise ConfigurationError(
                    f"{path}: {field}: a secret must come from the environment; "
                    "write it as ${VARIABLE}"
                )
            out[str(key)] = _expand(item, path, field, env)
        return out
    if isinstance(value, list):
        return [_expand(item, path, f"{where}[{i}]", env) for i, item in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigurationError(f"{path}: {where}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(substitute, value)
    return value


def sections(data: Mapping[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """Section ``key`` as a list of mappings: the seed's single mapping, or a list of them."""
    value = data.get(key)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"{key}[{i}]" if isinstance(value, list) else key
            raise ConfigurationError(f"{path}: {where}: expected a mapping of fields")
    return items
