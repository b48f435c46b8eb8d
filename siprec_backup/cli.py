"""The ``siprec-backup`` command line.

Every command works without a Prefect server except ``demo`` and the ``--storage-block`` options,
which load Prefect blocks. Errors are one line on stderr and exit status 1, never a traceback
(set SIPREC_BACKUP_DEBUG=1 to see one).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from siprec_backup.catalog import list_backups
from siprec_backup.errors import ConfigurationError, NotFoundError, SiprecBackupError
from siprec_backup.lab.cli import lab_app
from siprec_backup.storage import LocalStore, ObjectStore
from siprec_backup.stream import MasterKey, read_header, unseal

KEY_ENV = "SIPREC_BACKUP_KEY"

app = typer.Typer(
    help="Encrypted, verifiable backups of SIPREC recording platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
backup_app = typer.Typer(help="Inspect the backup catalog.", no_args_is_help=True)
app.add_typer(lab_app, name="lab", help="Start, inspect and stop the throwaway lab.")
app.add_typer(backup_app, name="backup")


@app.command()
def demo(
    lab_dir: Annotated[Path | None, typer.Option("--dir", help="Lab directory.")] = None,
    scale: Annotated[int, typer.Option(help="Seed data size in MB.")] = 50,
) -> None:
    """Run the main job end to end on the lab: backup via the nightly deployment, then restore."""
    from deployments.demo import run_demo  # Prefect is needed here only

    run_demo(lab_dir, scale_mb=scale)


def _store(store_dir: Path | None, storage_block: str | None) -> tuple[ObjectStore, str]:
    if (store_dir is None) == (storage_block is None):
        raise ConfigurationError("give exactly one of --store-dir or --storage-block")
    if store_dir is not None:
        if not store_dir.is_dir():
            raise NotFoundError(f"store directory {store_dir} does not exist")
        return LocalStore(store_dir), ""
    from blocks.storage import load_store  # needs the Prefect server

    assert storage_block is not None
    return load_store(storage_block)


@backup_app.command("list")
def backup_list(
    store_dir: Annotated[
        Path | None, typer.Option(help="A local store directory (no Prefect needed).")
    ] = None,
    storage_block: Annotated[str | None, typer.Option(help="A storage block name.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Key prefix (default: the block's).")] = None,
    cluster: Annotated[str, typer.Option(help="Only this cluster.")] = "",
    source: Annotated[str, typer.Option(help="Only this source.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every backup in a store: id, time, size, status, verified."""
    store, block_prefix = _store(store_dir, storage_block)
    entries = list_backups(
        store, prefix if prefix is not None else block_prefix, cluster=cluster, source=source
    )
    rows = [entry.row() for entry in entries]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no backups in {store.describe()}")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        typer.echo("  ".join(row[c].ljust(widths[c]) for c in columns))


def _read_key_text(key_file: Path | None) -> str:
    if key_file is not None:
        try:
            return key_file.read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read key file {key_file}: {exc.strerror}") from None
    text = os.environ.get(KEY_ENV)
    if not text:
        raise ConfigurationError(f"no key: pass --key-file or set {KEY_ENV}")
    return text


@app.command()
def decrypt(
    obj: Annotated[
        Path, typer.Argument(metavar="OBJECT", help="Backup object file, or - for stdin.")
    ],
    key_file: Annotated[
        Path | None, typer.Option(help=f"File holding the master key (else ${KEY_ENV}).")
    ] = None,
    key_id: Annotated[
        str | None, typer.Option(help="Key id (default: read from the object's header).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    raw: Annotated[bool, typer.Option(help="Do not decompress (emit the zstd stream).")] = False,
) -> None:
    """Decrypt one backup object with no Prefect server: the break-glass path.

    The output of a PostgreSQL backup is a pg_dump custom-format archive:
    `siprec-backup decrypt data.sbk --key-file master.key | pg_restore -d DB`.
    """
    key_text = _read_key_text(key_file)
    with _open_input(obj) as source:
        if key_id is None:
            if not source.seekable():
                raise ConfigurationError("reading from a pipe: pass --key-id")
            key_id = read_header(source).key_id
            source.seek(0)
        key = MasterKey.from_text(key_id, key_text)
        if output is None:
            unseal(source, sys.stdout.buffer, key, decompress=not raw)
            return
        partial = output.with_name(f".{output.name}.partial")
        try:
            with open(partial, "wb") as sink:
                unseal(source, sink, key, decompress=not raw)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)


def _open_input(obj: Path) -> BinaryIO:
    if str(obj) == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    try:
        return open(obj, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"no such object file: {obj}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot open {obj}: {exc.strerror}") from None


def main() -> None:
    """Entry point: one clear line and exit 1 on any error."""
    try:
        app()
    except SiprecBackupError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        _fail("output closed early (broken pipe)")
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as exc:
        if os.environ.get("SIPREC_BACKUP_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc}")


def _fail(message: str) -> None:
    sys.stderr.write(f"siprec-backup: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)
