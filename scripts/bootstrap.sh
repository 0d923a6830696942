# Sourced by scripts/test and scripts/demo: makes sure Prosody and a virtual
# environment with netchat are there. Installs only what is missing:
#   - the Debian packages 'prosody' and, for the tests, 'ejabberd' and
#     'dnsmasq-base' (apt-get; sudo when not root),
#   - a virtual environment ($NETCHAT_VENV, default .venv) with netchat and its extras.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${NETCHAT_VENV:-$top/.venv}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_package() {  # $1: command that tells it is there, $2: Debian package
    if command -v "$1" >/dev/null 2>&1; then return; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "netchat: $2 is missing and there is no apt-get here;" \
             "install the '$2' package with your system's package manager" >&2
        exit 1
    fi
    echo "netchat: installing $2 (apt-get install $2)..." >&2
    if [ -z "${apt_updated:-}" ]; then as_root apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
    # Debian may start a system-wide server on port 5222; netchat's tests and demo
    # start their own on free ports and do not use it.
}

ensure_prosody() { ensure_package prosody prosody; }
ensure_ejabberd() {  # the server, and erlc for a cluster's epmd module
    ensure_package erl ejabberd
    ensure_package erlc erlang-base
}
# a real DNS server for the SRV tests (dnsmasq lives in /usr/sbin)
ensure_dnsmasq() { PATH="$PATH:/usr/sbin:/sbin" ensure_package dnsmasq dnsmasq-base; }

ensure_venv() {  # $1: extras, e.g. "test"
    local extras=${1:+[$1]}
    if [ ! -x "$venv/bin/python" ]; then
        echo "netchat: creating virtual environment $venv" >&2
        if ! python3 -m venv "$venv" 2>/dev/null; then
            echo "netchat: installing python3-venv (apt-get)..." >&2
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$top$extras"
}
