#!/usr/bin/env bash
# Make sure the infrastructure Whistle's tests need is up on this machine
# (Debian 12, run as root): RabbitMQ with the management plugin, Redis, Chromium
# with its ChromeDriver for the browser tests, and PostgreSQL with the `whistle`
# database (the archive; docs/archive.md).
#
# Idempotent and quick (well under 2 s) when everything is already running.
# Prints one short line per step; on failure prints why and exits non-zero.
#
# The ports can be overridden (only useful for exercising the start paths next
# to the real services): INFRA_RABBITMQ_PORT, INFRA_RABBITMQ_MGMT_PORT,
# INFRA_REDIS_PORT, INFRA_REDIS_LOGFILE, INFRA_POSTGRES_PORT.  rabbitmq-server/rabbitmqctl also honour
# the usual RABBITMQ_* environment (e.g. RABBITMQ_NODENAME).
set -euo pipefail

RABBIT_PORT="${INFRA_RABBITMQ_PORT:-5672}"
MGMT_PORT="${INFRA_RABBITMQ_MGMT_PORT:-15672}"
REDIS_PORT="${INFRA_REDIS_PORT:-6379}"
PG_PORT="${INFRA_POSTGRES_PORT:-5432}"
REDIS_DIR=/var/lib/redis
REDIS_LOGFILE="${INFRA_REDIS_LOGFILE:-/var/log/redis/ci.log}"
WAIT_SECONDS="${INFRA_WAIT_SECONDS:-60}"

LOG="$(mktemp -t whistle-infra.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

say() { printf 'infra: %s\n' "$*"; }

die() {
    printf 'infra: ERROR: %s\n' "$*" >&2
    if [[ -s "$LOG" ]]; then
        printf 'infra: last output:\n' >&2
        tail -n 20 "$LOG" | sed 's/^/    /' >&2
    fi
    exit 1
}

# Run a command with its output captured in $LOG (shown only on failure).
quiet() { "$@" >>"$LOG" 2>&1; }

port_open() { # host port
    timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# --- packages ---------------------------------------------------------------

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

apt_updated=0
ensure_pkg() { # package
    if pkg_installed "$1"; then
        return 0
    fi
    [[ "$(id -u)" -eq 0 ]] || die "$1 is not installed and we are not root"
    say "installing $1"
    if [[ $apt_updated -eq 0 ]]; then
        quiet apt-get update || die "apt-get update failed"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive quiet apt-get install -y "$1" ||
        die "apt-get install $1 failed"
}

ensure_pkg rabbitmq-server
ensure_pkg redis-server
ensure_pkg curl
ensure_pkg iptables  # the cluster scenarios cut a node of their own cluster off (tests/cluster)
# The pages' browser tests drive Debian's Chromium through Debian's ChromeDriver (the
# same source package, so their versions always match; nothing is downloaded at run time).
ensure_pkg chromium
ensure_pkg chromium-driver
# A CJK font, so that the browser tests' screenshots show Chinese text, not boxes.
ensure_pkg fonts-wqy-microhei

ensure_pkg postgresql

for tool in rabbitmq-server rabbitmqctl rabbitmq-plugins redis-server redis-cli curl chromium \
    chromedriver pg_ctlcluster pg_isready psql; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH"
done

# --- RabbitMQ ---------------------------------------------------------------

MGMT_URL="http://127.0.0.1:${MGMT_PORT}/api/overview"

mgmt_ok() {
    curl -fsS -o /dev/null --max-time 3 -u guest:guest "$MGMT_URL" 2>/dev/null
}

rabbit_ok() {
    # The management API answering implies the broker is up; it's much faster
    # to ask than `rabbitmqctl status`, so try it first.
    port_open 127.0.0.1 "$RABBIT_PORT" && { mgmt_ok || rabbitmqctl -q status >/dev/null 2>&1; }
}

wait_for() { # description command...
    local what="$1" deadline=$((SECONDS + WAIT_SECONDS))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die "$what did not come up within ${WAIT_SECONDS}s"
        sleep 1
    done
}

if rabbit_ok; then
    say "rabbitmq: running (port $RABBIT_PORT)"
else
    if rabbitmqctl -q ping >/dev/null 2>&1; then
        # The Erlang node is alive but the rabbit app isn't listening
        # (e.g. after `rabbitmqctl stop_app`); starting the server again
        # would clash with the existing node name.
        say "rabbitmq: node up but app stopped, starting app"
        quiet rabbitmqctl start_app || die "rabbitmqctl start_app failed"
    else
        say "rabbitmq: starting"
        quiet rabbitmq-server -detached || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
    fi
    wait_for "RabbitMQ" rabbit_ok
    say "rabbitmq: running (port $RABBIT_PORT)"
fi

if mgmt_ok; then
    say "rabbitmq management: answering on $MGMT_PORT"
else
    say "rabbitmq management: enabling plugin"
    quiet rabbitmq-plugins enable rabbitmq_management ||
        die "rabbitmq-plugins enable rabbitmq_management failed"
    wait_for "RabbitMQ management API ($MGMT_URL, guest:guest)" mgmt_ok
    say "rabbitmq management: answering on $MGMT_PORT"
fi

# --- Redis ------------------------------------------------------------------

redis_ok() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
}

if redis_ok; then
    say "redis: running (port $REDIS_PORT)"
else
    say "redis: starting"
    mkdir -p "$REDIS_DIR" "$(dirname "$REDIS_LOGFILE")"
    quiet redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_LOGFILE" ||
        die "redis-server failed to start (see $REDIS_LOGFILE)"
    wait_for "Redis on port $REDIS_PORT (log: $REDIS_LOGFILE)" redis_ok
    say "redis: running (port $REDIS_PORT)"
fi

# --- PostgreSQL -------------------------------------------------------------
# Debian's cluster (`main` of the newest installed version), started without systemd
# (containers have none). Whistle's development default is
# postgresql://postgres@127.0.0.1:5432/whistle with trust authentication on loopback;
# `whistle up` / `whistle db upgrade` apply the schema.

pg_ok() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_sql() { psql -X -q -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tA "$@"; }

if pg_ok; then
    say "postgresql: running (port $PG_PORT)"
else
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$version" ]] || die "no PostgreSQL cluster under /etc/postgresql"
    say "postgresql: starting cluster $version/main"
    quiet pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        die "pg_ctlcluster $version main start failed (see /var/log/postgresql/)"
    wait_for "PostgreSQL on port $PG_PORT" pg_ok
    say "postgresql: running (port $PG_PORT)"
fi

if ! pg_sql -c "SELECT 1" >/dev/null 2>&1; then
    # A fresh Debian cluster asks for a password over TCP: trust loopback, as the
    # development default expects (never do this on a shared or production server).
    hba="$(su postgres -c "psql -X -tA -c 'SHOW hba_file'" 2>>"$LOG")" ||
        die "cannot find pg_hba.conf"
    say "postgresql: trusting loopback connections ($hba)"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    quiet su postgres -c "psql -X -c 'SELECT pg_reload_conf()'" || die "reloading PostgreSQL failed"
    pg_sql -c "SELECT 1" >/dev/null 2>&1 || die "PostgreSQL refuses postgres@127.0.0.1"
fi

if [[ "$(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = 'whistle'")" == "1" ]]; then
    say "postgresql: database whistle exists"
else
    quiet pg_sql -c "CREATE DATABASE whistle" || die "CREATE DATABASE whistle failed"
    say "postgresql: database whistle created"
fi
