"""The failover levers on the command line: ``blocks apply``, ``lb``, ``dns`` and ``ssh``.

Every lever command takes where its lever is described, exactly one of:

* ``--block NAME``: a block on the Prefect server;
* ``--config FILE.yaml [--name NAME]``: the YAML file ``blocks apply`` reads (secrets as
  ``${VAR}`` from the environment), with no Prefect server: the break-glass path. Only the
  sections the command needs are read (a load balancer's also reads ``ssh``, for an nginx
  host reached over SSH), so other sections' variables need not be set.

Prefect is imported only inside the commands that read blocks or the file (the blocks validate
it), never when the CLI starts. Errors are :class:`~siprec_backup.errors.SiprecBackupError`
subclasses that :func:`siprec_backup.cli.main` turns into one line and exit status 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TypeVar, cast

import httpx
import typer

from siprec_backup.dns import Change, DnsZone, PropagationResult
from siprec_backup.dns.records import ACTIONS, RecordSet
from siprec_backup.errors import CommandTimeoutError, ConfigurationError
from siprec_backup.remote import (
    AuditRecord,
    AuditSink,
    ServiceManager,
    SshClient,
    SshConfig,
    SshRunner,
    download,
    upload,
)
from siprec_backup.remote.services import ACTIONS as SERVICE_ACTIONS
from siprec_backup.traffic import LoadBalancer, Nginx, ServerState

B = TypeVar("B")

#: Exit status of ``ssh run`` when the remote command ran past ``--timeout`` (as timeout(1)).
TIMEOUT_EXIT = 124
#: Exit status when the remote command ended without a status (killed by a signal), as ssh(1).
NO_STATUS_EXIT = 255

blocks_app = typer.Typer(
    help="Create or update the lever blocks (load balancers, DNS, SSH) from a YAML file.",
    no_args_is_help=True,
)
lb_app = typer.Typer(
    help="Load balancer levers (HAProxy, nginx, NGINX Plus): check, list, set states, repoint.",
    no_args_is_help=True,
)
dns_app = typer.Typer(
    help="DNS levers (BIND / RFC 2136): show, plan and apply changes, TTLs, verify everywhere.",
    no_args_is_help=True,
)
ssh_app = typer.Typer(
    help="SSH levers: check a host, run commands, systemd services, file transfers.",
    no_args_is_help=True,
)

BlockOption = Annotated[
    str | None, typer.Option("--block", help="A block on the Prefect server.", metavar="NAME")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Instead of --block: the YAML file `blocks apply` reads (${VAR} from the "
        "environment); no Prefect server needed.",
        metavar="FILE.yaml",
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option("--name", help="With --config: which entry (optional if the file has only one)."),
]
DeadlineOption = Annotated[float, typer.Option(help="Seconds to wait before giving up.", min=0.0)]
AuditLogOption = Annotated[
    Path | None,
    typer.Option(
        "--audit-log", help="Append the audit records (who ran what, where) as JSON lines."
    ),
]


# --- where a lever comes from -------------------------------------------------------------


def _check_source(block: str | None, config: Path | None, name: str | None) -> None:
    if (block is None) == (config is None):
        raise ConfigurationError("give exactly one of --block NAME or --config FILE.yaml")
    if name is not None and config is None:
        raise ConfigurationError("--name goes with --config (--block names the block itself)")


@contextlib.contextmanager
def _prefect_server() -> Iterator[None]:
    """Turns an unreachable Prefect server into one line that points at --config."""
    try:
        yield
    except httpx.TransportError as exc:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url or "(PREFECT_API_URL is not set)"
        raise ConfigurationError(
            f"cannot reach the Prefect server at {url}: {exc}; without it, use --config FILE.yaml"
        ) from None


def _from_config(path: Path, kinds: tuple[type[B], ...], name: str | None, what: str) -> B:
    """The entry of ``path`` whose block is one of ``kinds`` (by ``name`` if given)."""
    from blocks.apply import read_blocks  # imports Prefect; contacts no server

    # Only the sections needed: the others' ${VAR}s need not be set (break-glass use).
    only = (what, "ssh") if what == "load_balancer" else (what,)
    found = [p for p in read_blocks(path, only=only) if isinstance(p.block, kinds)]
    names = ", ".join(p.name for p in found) or "none"
    if name is not None:
        found = [p for p in found if p.name == name]
        if not found:
            raise ConfigurationError(f"{path}: no {what} named {name!r} (names: {names})")
    if not found:
        raise ConfigurationError(f"{path}: no {what} in the file")
    if len(found) > 1:
        where = ", ".join(p.where for p in found)
        if name is not None:
            raise ConfigurationError(f"{path}: several {what} entries are named {name!r} ({where})")
        raise ConfigurationError(f"{path}: several {what} entries ({where}): pick one with --name")
    return cast(B, found[0].block)  # one of `kinds`: filtered above


@contextlib.contextmanager
def _load_balancer(
    block: str | None, config: Path | None, name: str | None
) -> Iterator[LoadBalancer]:
    """The lever of a load balancer block or file entry; an SSH connection an nginx entry
    needs (``ssh_host``) is closed on exit."""
    _check_source(block, config, name)
    from blocks.load_balancers import LOAD_BALANCER_TYPES, NginxLoadBalancer

    if block is not None:
        from blocks.load_balancers import load_load_balancer_block

        with _prefect_server():
            lever = load_load_balancer_block(block).load_balancer()  # nginx: may load an SshHost
        yield lever
        return
    assert config is not None
    kinds = tuple(LOAD_BALANCER_TYPES.values())
    found = _from_config(config, kinds, name, "load_balancer")
    if isinstance(found, NginxLoadBalancer) and found.ssh_host:
        with SshClient(_ssh_config(None, config, found.ssh_host)) as client:
            yield found.load_balancer(runner=SshRunner(client))
        return
    yield found.load_balancer()


def _dns(block: str | None, config: Path | None, name: str | None) -> DnsZone:
    _check_source(block, config, name)
    from blocks.dns import DNS_ZONE_TYPES, load_dns_zone

    if block is not None:
        with _prefect_server():
            return load_dns_zone(block)
    assert config is not None
    return _from_config(config, tuple(DNS_ZONE_TYPES.values()), name, "dns").dns()


def _ssh_config(block: str | None, config: Path | None, name: str | None) -> SshConfig:
    _check_source(block, config, name)
    from blocks.ssh import SshHost

    if block is not None:
        from blocks.loading import load_block

        with _prefect_server():
            return load_block(SshHost, block).config()
    assert config is not None
    host: SshHost = _from_config(config, (SshHost,), name, "ssh")
    return host.config()


# --- blocks apply -------------------------------------------------------------------------


@blocks_app.command("apply")
def blocks_apply(
    file: Annotated[Path, typer.Argument(metavar="FILE.yaml", help="The configuration file.")],
    dry_run: Annotated[
        bool, typer.Option(help="Validate the file and list what would be saved; no server.")
    ] = False,
) -> None:
    """Create or update the blocks a YAML file describes (load_balancer, dns, ssh sections).

    Secrets only as ${VAR}, taken from the environment. The whole file is validated first: any
    problem is one line naming the file, the field and the problem, and nothing is saved.
    Prints `created|updated <block type> <name>` per block (with --dry-run: `would save ...`).
    """
    from blocks.apply import apply_blocks, read_blocks

    planned = read_blocks(file)
    if not planned:
        raise ConfigurationError(f"{file}: no load_balancer, dns or ssh entries")
    if dry_run:
        for item in planned:
            typer.echo(f"would save {item.kind} {item.name}")
        return
    with _prefect_server():
        done = apply_blocks(planned)
    for item, action in done:
        typer.echo(f"{action} {item.kind} {item.name}")


# --- load balancers -----------------------------------------------------------------------


@lb_app.command("check")
def lb_check(
    block: BlockOption = None, config: ConfigOption = None, name: NameOption = None
) -> None:
    """Reach the load balancer: `ok: <what>: <what answered>`, or one error line and exit 1."""
    with _load_balancer(block, config, name) as lb:
        typer.echo(f"ok: {lb.describe()}: {lb.check()}")


@lb_app.command("list")
def lb_list(
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every server of every backend: address, status, state, current sessions, weight."""
    with _load_balancer(block, config, name) as lb:
        servers = lb.servers()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(s) for s in servers], indent=2))
        return
    if not servers:
        typer.echo("no servers")
        return
    _print_table(
        [
            {
                "backend": s.backend,
                "server": s.server,
                "address": s.address or "-",
                "status": s.status,
                "state": s.state,
                "sessions": str(s.current_sessions),
                "weight": str(s.weight),
            }
            for s in servers
        ]
    )


@lb_app.command("set")
def lb_set(
    backend: Annotated[str, typer.Argument(help="Backend (HAProxy) or upstream (nginx).")],
    server: Annotated[str, typer.Argument(help="Server name (nginx: its address).")],
    state: Annotated[ServerState, typer.Argument(help="ready, drain or maint.")],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    wait: Annotated[
        bool, typer.Option(help="For drain and maint: wait until its sessions reach 0.")
    ] = True,
    deadline: DeadlineOption = 300.0,
) -> None:
    """Set a server ready, draining or in maintenance; for drain and maint, then wait (by
    default) until it has no current sessions and print the seconds. Exit 1 if sessions remain
    at the deadline."""
    with _load_balancer(block, config, name) as lb:
        lb.set_state(backend, server, state)
        typer.echo(f"{backend}/{server}: set {state.value}")
        if wait and state is not ServerState.READY:
            seconds = lb.wait_drained(backend, server, deadline_s=deadline)
            typer.echo(f"{backend}/{server}: 0 current sessions after {seconds:.1f} s")


@lb_app.command("repoint")
def lb_repoint(
    upstream: Annotated[str, typer.Argument(help="The nginx upstream.")],
    addresses: Annotated[
        list[str], typer.Argument(metavar="ADDRESS...", help="host:port of each server.")
    ],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
) -> None:
    """nginx only: make ADDRESS... the only servers of UPSTREAM (rewrite its include file,
    nginx -t, reload) and print the seconds until the new workers serve it."""
    with _load_balancer(block, config, name) as lb:
        if not isinstance(lb, Nginx):
            raise ConfigurationError(
                f"{lb.describe()}: repoint is for open-source nginx; use `lb set` to move "
                "traffic between servers"
            )
        seconds = lb.repoint(upstream, addresses)
        typer.echo(f"{upstream} -> {', '.join(addresses)}: reloaded and serving in {seconds:.2f} s")


# --- DNS ----------------------------------------------------------------------------------

CHANGE_HELP = (
    "One change (repeatable; all are sent as one atomic update): "
    "'create|replace NAME TYPE TTL VALUE[, VALUE...]' or 'delete NAME TYPE'. NAME is relative "
    "to the zone ('@' is the apex) or absolute with a trailing dot; TYPE is A, AAAA, CNAME, MX, "
    "TXT or SRV; the TTL is required. Values are separated by commas, so a value may contain "
    "spaces: 'replace _sip._tcp SRV 60 10 5 5060 sip1, 20 5 5060 sip2'. Double-quote a TXT "
    "value that contains a comma."
)
VerifyOption = Annotated[
    bool,
    typer.Option(help="Wait until every nameserver serves the change; print serials, seconds."),
]


def parse_change(text: str) -> Change:
    """One ``--change``: ``ACTION NAME TYPE TTL VALUE[, VALUE...]`` or ``delete NAME TYPE``."""
    words = text.split(None, 4)
    if len(words) < 3:
        raise ConfigurationError(
            f"--change {text!r}: write 'ACTION NAME TYPE TTL VALUE[, VALUE...]' or "
            "'delete NAME TYPE'"
        )
    action = next((a for a in ACTIONS if a == words[0].lower()), None)
    if action is None:
        raise ConfigurationError(
            f"--change {text!r}: unknown action {words[0]!r}: use {', '.join(ACTIONS)}"
        )
    record_name, rtype = words[1], words[2]
    try:
        if action == "delete":
            if len(words) > 3:
                raise ConfigurationError("delete takes only NAME TYPE")
            return Change.delete(record_name, rtype)
        if len(words) < 4 or not words[3].isdigit():
            raise ConfigurationError(f"{action} needs a TTL (seconds) after the type")
        values = split_values(words[4] if len(words) > 4 else "")
        if not values:
            raise ConfigurationError("no value after the TTL")
        return Change(action, RecordSet(record_name, rtype, int(words[3]), tuple(values)))
    except ConfigurationError as exc:
        raise ConfigurationError(f"--change {text!r}: {exc}") from None


def split_values(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; commas inside double quotes do not split."""
    values: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    if quoted:
        raise ConfigurationError(f"unbalanced double quote in {text!r}")
    if any(not v for v in values[:-1]) or (len(values) > 1 and not values[-1]):
        raise ConfigurationError(f"empty value in {text!r}")
    return [v for v in values if v]


@dns_app.command("show")
def dns_show(
    record_name: Annotated[str, typer.Argument(metavar="NAME", help="Relative or absolute.")],
    rtype: Annotated[str, typer.Argument(metavar="TYPE", help="A, AAAA, CNAME, MX, TXT, SRV.")],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
) -> None:
    """What the zone's primary serves for NAME TYPE, and the zone's serial there."""
    dns = _dns(block, config, name)
    record = dns.lookup(record_name, rtype)
    typer.echo(record.describe())
    typer.echo(f"serial {dns.serial()} on {dns.describe()}")


@dns_app.command("apply")
def dns_apply(
    change: Annotated[list[str], typer.Option(help=CHANGE_HELP, metavar="'CHANGE'")],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan against what the primary serves; send nothing.")
    ] = False,
    verify: VerifyOption = True,
    deadline: DeadlineOption = 60.0,
) -> None:
    """Print the plan (one line per change), send the changes as one TSIG-signed update, then
    (by default) wait until every nameserver serves them and print each one's serial and
    seconds. Exit 1 naming the nameservers that still disagree at the deadline."""
    changes = [parse_change(text) for text in change]
    dns = _dns(block, config, name)
    for line in dns.plan(changes):
        typer.echo(line)
    if dry_run:
        typer.echo(f"dry run: nothing sent (zone {dns.zone} serial {dns.serial()})")
        return
    result = dns.apply(changes)
    typer.echo(f"applied: serial {result.serial} on {dns.describe()} in {result.seconds:.2f} s")
    if verify:
        _report_propagation(dns.wait_propagated(result, deadline=deadline))


@dns_app.command("ttl")
def dns_ttl(
    record_name: Annotated[str, typer.Argument(metavar="NAME", help="Relative or absolute.")],
    rtype: Annotated[str, typer.Argument(metavar="TYPE", help="A, AAAA, CNAME, MX, TXT, SRV.")],
    ttl: Annotated[int, typer.Argument(help="The TTL in seconds.", min=0)],
    restore: Annotated[
        bool, typer.Option(help="Set the TTL back to TTL (after a cutover) instead of lowering.")
    ] = False,
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    verify: VerifyOption = True,
    deadline: DeadlineOption = 60.0,
) -> None:
    """Lower the TTL of an existing record set to TTL ahead of a cutover (a lower one is left
    alone), or with --restore set it back; values are kept. Prints the previous TTL (note it:
    --restore puts it back), then verifies every nameserver."""
    dns = _dns(block, config, name)
    done = (
        dns.restore_ttl(record_name, rtype, ttl)
        if restore
        else dns.lower_ttl(record_name, rtype, ttl)
    )
    record = done.record
    if done.update is None:
        typer.echo(
            f"{record.name} {record.rtype}: previous TTL {done.previous_ttl}, unchanged "
            f"(nothing sent)"
        )
        return
    typer.echo(
        f"{record.name} {record.rtype}: previous TTL {done.previous_ttl}, now {record.ttl} "
        f"(serial {done.update.serial})"
    )
    if verify:
        _report_propagation(dns.wait_propagated(done.update, deadline=deadline))


def _report_propagation(result: PropagationResult) -> None:
    for state in result.nameservers:
        seconds = f"{state.seconds:.2f} s" if state.seconds is not None else "?"
        typer.echo(f"verified on {state.nameserver.label}: serial {state.serial} after {seconds}")
    typer.echo(f"propagated to {len(result.nameservers)} nameserver(s) in {result.seconds:.2f} s")


# --- SSH ----------------------------------------------------------------------------------


def _audit_sink(path: Path | None) -> AuditSink | None:
    """Appends each record to ``path`` as a JSON line; the file is opened now, so a bad path
    fails before anything runs."""
    if path is None:
        return None
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise ConfigurationError(f"--audit-log {path}: {exc.strerror}") from None

    def append(record: AuditRecord) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")

    return append


def _actor() -> str:
    """Who acts, for audit records: ``user@machine (siprec-backup CLI)``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (siprec-backup CLI)"


def _client(
    block: str | None, config: Path | None, name: str | None, audit_log: Path | None = None
) -> SshClient:
    audit = _audit_sink(audit_log)
    return SshClient(_ssh_config(block, config, name), actor=_actor(), audit=audit)


def _stream(stream: str, line: str) -> None:
    """Writes a remote line to our stdout or stderr at once."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.write(line + "\n")
    out.flush()


@ssh_app.command("check")
def ssh_check(
    block: BlockOption = None, config: ConfigOption = None, name: NameOption = None
) -> None:
    """Log in (host key pinned), run `true`, print the host key and the round trip."""
    ssh_config = _ssh_config(block, config, name)
    start = time.monotonic()
    with SshClient(ssh_config) as client:
        connected = time.monotonic() - start
        key = client.transport.get_remote_server_key()
        t0 = time.monotonic()
        client.run("true", timeout=ssh_config.connect_timeout, mutating=False)
        round_trip = time.monotonic() - t0
    typer.echo(
        f"ok: ssh {ssh_config.target}: host key {key.get_name()} {key.fingerprint}, "
        f"login {connected * 1000:.0f} ms, 'true' round trip {round_trip * 1000:.1f} ms"
    )


@ssh_app.command("run", context_settings={"allow_interspersed_args": False})
def ssh_run(
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="COMMAND",
            help="The command; its words are joined with spaces and run by the remote shell, "
            "as ssh(1) does.",
        ),
    ],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds before it is stopped.", min=0.001)
    ] = 300.0,
    audit_log: AuditLogOption = None,
) -> None:
    """Run a command on the host; its stdout and stderr lines stream here as they arrive.

    Exits with the remote exit status; 124 (and one line) if it ran past --timeout.
    """
    with _client(block, config, name, audit_log) as client:
        try:
            result = client.run(" ".join(command), timeout=timeout, on_line=_stream, check=False)
        except CommandTimeoutError as exc:
            typer.echo(f"siprec-backup: error: {exc}", err=True)
            raise typer.Exit(TIMEOUT_EXIT) from None
    status = result.exit_status
    raise typer.Exit(status if 0 <= status <= 255 else NO_STATUS_EXIT)


@ssh_app.command("service")
def ssh_service(
    action: Annotated[str, typer.Argument(help=" | ".join(SERVICE_ACTIONS))],
    unit: Annotated[str, typer.Argument(help="The systemd unit, e.g. postgresql.service.")],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    sudo: Annotated[bool, typer.Option(help="Through `sudo -n` (never prompts).")] = False,
    systemctl: Annotated[
        str, typer.Option(help="The systemctl program on the host.", metavar="PATH")
    ] = "systemctl",
    timeout: Annotated[float, typer.Option(help="Seconds for systemctl.", min=0.001)] = 90.0,
    audit_log: AuditLogOption = None,
) -> None:
    """systemctl ACTION UNIT on the host. start/stop/restart: exit 1 if systemctl fails.
    status: its text, exit 0 (running) or 3 (not running). is-active: the state word, exit 0
    if active, else 3, as systemctl does."""
    if action not in SERVICE_ACTIONS:
        raise ConfigurationError(
            f"unknown service action {action!r}: use {', '.join(SERVICE_ACTIONS)}"
        )
    with _client(block, config, name, audit_log) as client:
        services = ServiceManager(client, sudo=sudo, systemctl=systemctl, timeout=timeout)
        if action == "status":
            result = services.status(unit)
            for line in result.stdout_tail.splitlines():
                typer.echo(line)
            raise typer.Exit(0 if result.exit_status == 0 else 3)
        if action == "is-active":
            word = services.active_state(unit)
            typer.echo(word)
            raise typer.Exit(0 if word == "active" else 3)
        act = {"start": services.start, "stop": services.stop, "restart": services.restart}
        result = act[action](unit, on_line=_stream)
    typer.echo(f"ok: {action} {unit} on {client.host} in {result.duration:.2f} s")


@ssh_app.command("put")
def ssh_put(
    local: Annotated[Path, typer.Argument(help="Local file.")],
    remote: Annotated[str, typer.Argument(help="Remote path (replaced atomically).")],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    audit_log: AuditLogOption = None,
) -> None:
    """Upload a file over SFTP, verified by sha256 on both sides: bytes, sha256, MiB/s."""
    with _client(block, config, name, audit_log) as client:
        done = upload(client, local, remote)
    typer.echo(
        f"put {local} -> {client.host}:{remote}: {done.bytes:,} bytes, sha256 {done.sha256}, "
        f"{done.mib_per_second:.1f} MiB/s"
    )


@ssh_app.command("get")
def ssh_get(
    remote: Annotated[str, typer.Argument(help="Remote path.")],
    local: Annotated[Path, typer.Argument(help="Local file (replaced atomically).")],
    block: BlockOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
) -> None:
    """Download a file over SFTP, verified by sha256 on both sides: bytes, sha256, MiB/s."""
    with _client(block, config, name) as client:
        done = download(client, remote, local)
    typer.echo(
        f"get {client.host}:{remote} -> {local}: {done.bytes:,} bytes, sha256 {done.sha256}, "
        f"{done.mib_per_second:.1f} MiB/s"
    )


def _print_table(rows: list[dict[str, str]]) -> None:
    from siprec_backup.cli import _print_table as print_table  # cli imports this module

    print_table(rows)
