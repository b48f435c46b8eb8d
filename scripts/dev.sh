#!/usr/bin/env bash
# The one entry point of the quick start, for a fresh Debian 12 machine as root:
#   bash scripts/dev.sh demo   installs what is missing, then runs the main job end to end on the lab
#   bash scripts/dev.sh test   installs what is missing, then runs lint, types and the whole test suite
# Anything after the command is passed on (e.g. `demo --scale 200`, `test -k format`).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(postgresql-15 postgresql-client-15 mariadb-server mariadb-client redis-server redis-tools
    zstd age python3-venv python3-pip procps ca-certificates
    openssh-server openssh-client haproxy nginx bind9 bind9-utils bind9-dnsutils socat)
# Azurite (the Azure Blob emulator of the lab) comes from npm; 3.35.x is the last release for Node 20.
AZURITE_VERSION=3.35.0
AZURITE_DIR=${SIPREC_AZURITE_DIR:-$HOME/.cache/siprec-backup/azurite}
VENV=.venv

install_system_packages() {
    local missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        # The lab runs its own sshd, HAProxy, nginx and BIND on free loopback ports: keep the
        # packages from starting their system services (policy-rc.d answers "not now").
        local policy=/usr/sbin/policy-rc.d own_policy=
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
        [ -z "$own_policy" ] || rm -f "$policy"
    fi
    # Node.js may come from Debian (nodejs + npm) or from NodeSource (npm inside nodejs).
    if ! command -v npm >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
    fi
}

install_node_packages() {
    if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
        echo "installing azurite $AZURITE_VERSION into $AZURITE_DIR"
        mkdir -p "$AZURITE_DIR"
        npm install --silent --no-audit --no-fund --prefix "$AZURITE_DIR" "azurite@$AZURITE_VERSION"
    fi
}

install_python_packages() {
    local python=/usr/bin/python3
    [ -x "$python" ] || python=python3
    [ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
    # Reinstall only when the project's dependencies changed.
    if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e '.[dev,aws,gcp,azure]'
        touch "$VENV/.installed"
    fi
}

command=${1:-}
shift || true
case "$command" in
    demo)
        install_system_packages
        install_python_packages
        install_node_packages
        exec "$VENV/bin/siprec-backup" demo "$@"
        ;;
    test)
        install_system_packages
        install_python_packages
        install_node_packages
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh demo|test [args...]" >&2
        exit 2
        ;;
esac
