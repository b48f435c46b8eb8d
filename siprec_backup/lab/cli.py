"""``siprec-backup lab up | down | status``: the throwaway SIPREC data tier from the shell.

Errors are raised as :class:`~siprec_backup.errors.LabError`; the main CLI turns them into one
line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from siprec_backup.lab.lab import Lab, LabState, format_status

lab_app = typer.Typer(
    help=(
        "A throwaway SIPREC data tier on free loopback ports: PostgreSQL 15 primary + streaming "
        "replica and a Prefect server + process worker, under one directory "
        "(default $SIPREC_LAB_DIR or /tmp/siprec-backup-lab)."
    ),
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Lab directory (default: $SIPREC_LAB_DIR or /tmp/siprec-backup-lab).",
        show_default=False,
    ),
]


class _Progress:
    """Prints the seed size to stderr as it grows."""

    def __init__(self, target_mb: int) -> None:
        self.target_mb = target_mb
        self.t0 = time.monotonic()

    def __call__(self, size: int) -> None:
        mb = size / (1024 * 1024)
        rate = mb / max(time.monotonic() - self.t0, 1e-6)
        print(
            f"\rseeding: {mb:7.0f} / {self.target_mb} MiB ({rate:.0f} MiB/s)",
            end="",
            file=sys.stderr,
            flush=True,
        )


def _print_state(state: LabState) -> None:
    typer.echo(format_status(state))


@lab_app.command()
def up(
    dir: DirOption = None,
    scale: Annotated[
        int,
        typer.Option("--scale", min=0, help="Grow the seed data to about this many MiB."),
    ] = 0,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="Start only the databases.")
    ] = False,
) -> None:
    """Start the lab (or only its dead servers) and print where everything runs."""
    lab = Lab(dir)
    t0 = time.monotonic()
    state = lab.up(prefect=not no_prefect)
    started = time.monotonic() - t0
    if scale > 0:
        from siprec_backup.lab import seed

        t1 = time.monotonic()
        stats = seed.fill(state.postgres().conninfo(), scale, progress=_Progress(scale))
        rows = ", ".join(f"{t} {n:,}" for t, n in stats.rows.items())
        print(file=sys.stderr)
        typer.echo(
            f"seed: {stats.mb:.0f} MiB in the siprec schema ({rows}); {time.monotonic() - t1:.1f} s"
        )
    _print_state(state)
    typer.echo(f"\nready in {started:.1f} s")


@lab_app.command()
def down(
    dir: DirOption = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the data; a later `up` restarts on it.")
    ] = False,
) -> None:
    """Stop every lab server and remove the lab directory."""
    lab = Lab(dir)
    existed = lab.root.exists()
    lab.down(keep=keep)
    if not existed:
        typer.echo(f"no lab in {lab.root}")
    else:
        typer.echo(f"lab stopped; {'data kept in' if keep else 'removed'} {lab.root}")


@lab_app.command()
def status(
    dir: DirOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print lab.json (without secrets).")
    ] = False,
) -> None:
    """Show what runs where: servers, PIDs, addresses, logs, Prefect URLs."""
    state = Lab(dir).state()
    if as_json:
        data = state.to_json()
        for name, alive in state.alive().items():
            data["services"][name]["alive"] = alive
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_state(state)
