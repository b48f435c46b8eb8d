"""A systemctl stand-in that really controls lab servers: ``systemctl [--no-pager] ACTION [--]
UNIT`` runs ``<units>/UNIT ACTION``, a script each lab cluster writes for its nodes (see
:meth:`LabCluster.unit_script`). systemd cannot run in the lab; this lets the failover's SSH steps
(stop the old primary's service, restart it as a replica) act on real servers through the lab's
real sshd.
"""

from __future__ import annotations

from pathlib import Path

from siprec_backup.lab.clusters import LabCluster

_SYSTEMCTL = """#!/bin/sh
# Lab stand-in for systemctl: runs {units}/UNIT ACTION (unknown units: exit 5, like systemd).
action=""
unit=""
for arg in "$@"; do
  case "$arg" in
    --*) ;;
    *) if [ -z "$action" ]; then action="$arg"; else unit="$arg"; fi ;;
  esac
done
script="{units}/$unit"
if [ -z "$unit" ] || [ ! -x "$script" ]; then
  echo "Unit $unit not found." >&2
  exit 5
fi
exec "$script" "$action"
"""


def write_systemctl(directory: Path) -> Path:
    """Write ``<directory>/systemctl`` and the empty ``<directory>/units``; return the script."""
    units = directory / "units"
    units.mkdir(parents=True, exist_ok=True)
    script = directory / "systemctl"
    script.write_text(_SYSTEMCTL.format(units=units))
    script.chmod(0o755)
    return script


def install_units(directory: Path, cluster: LabCluster) -> None:
    """Write each node's unit script of ``cluster`` under ``<directory>/units``."""
    units = directory / "units"
    units.mkdir(parents=True, exist_ok=True)
    for node in cluster.nodes:
        path = units / node.unit
        path.write_text(cluster.unit_script(node.name))
        path.chmod(0o755)
