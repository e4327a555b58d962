#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside (never touching) the machine's
# own broker (rabbit@localhost on 5672/15672/25672):
#
#   scripts/cluster.sh up       start it (idempotent: nodes already up are left alone)
#   scripts/cluster.sh down     stop it and remove its data (idempotent)
#   scripts/cluster.sh status   one line per node
#   scripts/cluster.sh start-node a|b|c    start one node again (after a kill or a stop)
#   scripts/cluster.sh stop-node a|b|c     stop one node gracefully
#   scripts/cluster.sh uri      the AMQP_URI listing the three nodes
#
# node          AMQP   management  Erlang distribution  own source address (dist)
# whistle-a     5781   15781       25781                127.0.0.11
# whistle-b     5782   15782       25782                127.0.0.12
# whistle-c     5783   15783       25783                127.0.0.13
#
# Each node has its own directory under $WHISTLE_CLUSTER_DIR (default
# /var/tmp/whistle-cluster): data, logs, config, enabled plugins (management only).
# They share the machine's epmd and Erlang cookie (/var/lib/rabbitmq/.erlang.cookie)
# and run as the rabbitmq user, like the machine's broker. They form the cluster by
# themselves at first boot (classic_config peer discovery): node a boots first, then
# b and c together join it; there is no stop_app / join_cluster / start_app round. An
# existing cluster's three nodes (after a reboot, say) start together.
#
# Settings chosen for a three-node cluster (docs/cluster.md):
#   cluster_partition_handling = pause_minority: a node cut off from the other two
#     pauses (closes its clients' connections) until it sees them again;
#   net_ticktime = 10: a partition is noticed within ~10 s, not RabbitMQ's 60;
#   each node opens its distribution connections from its own loopback address
#     (127.0.0.1x), so tests can cut one node off with iptables rules that name only
#     this cluster's ports and that address (tests/cluster/nodes.py).
set -euo pipefail

BASE="${WHISTLE_CLUSTER_DIR:-/var/tmp/whistle-cluster}"
NODES=(a b c)
WAIT_SECONDS="${CLUSTER_WAIT_SECONDS:-90}"
SBIN=/usr/lib/rabbitmq/bin

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: ERROR: %s\n' "$*" >&2; exit 1; }

index_of() { case "$1" in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; *) die "no node $1 (a, b or c)" ;; esac; }
nodename() { echo "whistle-$1@localhost"; }
amqp_port() { echo $((5780 + $(index_of "$1"))); }
mgmt_port() { echo $((15780 + $(index_of "$1"))); }
dist_port() { echo $((25780 + $(index_of "$1"))); }
source_ip() { echo "127.0.0.$((10 + $(index_of "$1")))"; }

# Run a RabbitMQ tool as the rabbitmq user, with its HOME (the shared Erlang cookie) and
# an environment file of the node's own instead of /etc/rabbitmq/rabbitmq-env.conf.
as_rabbitmq() { # node tool args...
    local node="$1" tool="$2"
    shift 2
    runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq \
        RABBITMQ_CONF_ENV_FILE="$BASE/$node/rabbitmq-env.conf" "$SBIN/$tool" "$@"
}

ctl() { # node args...: rabbitmqctl against that node
    local node="$1"
    shift
    as_rabbitmq "$node" rabbitmqctl -n "$(nodename "$node")" "$@"
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

mgmt() { # node path: GET from the node's management API (milliseconds, where the CLI takes ~1 s)
    curl -fsS --max-time 3 -u guest:guest "http://127.0.0.1:$(mgmt_port "$1")/api/$2" 2>/dev/null
}

node_running() { # AMQP listening and the management API answering: the node has booted
    port_open "$(amqp_port "$1")" && mgmt "$1" overview >/dev/null
}

write_config() { # node
    local node="$1" dir="$BASE/$1"
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$node")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$node")
loopback_users = none
cluster_formation.peer_discovery_backend = classic_config
cluster_formation.classic_config.nodes.1 = $(nodename a)
cluster_formation.classic_config.nodes.2 = $(nodename b)
cluster_formation.classic_config.nodes.3 = $(nodename c)
cluster_partition_handling = pause_minority
net_ticktime = 10
log.file.level = info
log.console = false
EOF
    local ip
    ip="$(source_ip "$node")"
    cat >"$dir/advanced.config" <<EOF
[{kernel, [{inet_dist_use_interface, {127,0,0,1}},
           {inet_dist_connect_options, [{ip, {${ip//./,}}}]}]}].
EOF
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
    cat >"$dir/rabbitmq-env.conf" <<EOF
NODENAME=$(nodename "$node")
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$(amqp_port "$node")
DIST_PORT=$(dist_port "$node")
MNESIA_BASE=$dir/mnesia
LOG_BASE=$dir/log
CONFIG_FILE=$dir/rabbitmq.conf
ADVANCED_CONFIG_FILE=$dir/advanced.config
ENABLED_PLUGINS_FILE=$dir/enabled_plugins
PID_FILE=$dir/pid
ERL_EPMD_ADDRESS=127.0.0.1
EOF
    chown -R rabbitmq:rabbitmq "$dir"
}

start_node() { # node: returns at once; see wait_node
    local node="$1"
    if node_running "$node"; then
        return 0
    fi
    write_config "$node"
    say "starting $(nodename "$node") (AMQP $(amqp_port "$node"), management $(mgmt_port "$node"))"
    as_rabbitmq "$node" rabbitmq-server -detached >>"$BASE/$node/log/startup.log" 2>&1 ||
        die "rabbitmq-server for $(nodename "$node") failed: see $BASE/$node/log/"
}

wait_node() { # node
    local node="$1" deadline=$((SECONDS + WAIT_SECONDS))
    until node_running "$node"; do
        ((SECONDS < deadline)) || die "$(nodename "$node") did not start in ${WAIT_SECONDS}s: see $BASE/$node/log/"
        sleep 0.5
    done
}

clustered() { # every node sees all three running
    local node
    for node in "${NODES[@]}"; do
        [[ "$(mgmt "$node" nodes | grep -o '"running":true' | wc -l)" == 3 ]] || return 1
    done
}

up() {
    command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (scripts/infra.sh installs it)"
    mkdir -p "$BASE"
    chown rabbitmq:rabbitmq "$BASE"
    if [[ -d "$BASE/a/mnesia/$(nodename a)" ]]; then
        # An existing cluster (stopped, or killed with its machine): all three at once. A
        # node that was not the last to stop waits at boot for the others to be back.
        start_node a
        start_node b
        start_node c
    else
        # A new one: a first, then b and c find it and join it (peer discovery at first boot)
        start_node a
        wait_node a
        start_node b
        start_node c
    fi
    wait_node a
    wait_node b
    wait_node c
    local deadline=$((SECONDS + WAIT_SECONDS))
    until clustered; do
        ((SECONDS < deadline)) || die "the three nodes did not form one cluster: $(ctl a -q cluster_status 2>&1 | head -20)"
        sleep 0.5
    done
    say "up: $(nodename a), $(nodename b), $(nodename c) clustered; AMQP_URI=$(uri)"
}

stop_node() { # node
    local node="$1"
    if [[ -f "$BASE/$node/rabbitmq-env.conf" ]] && ctl "$node" -q ping >/dev/null 2>&1; then
        say "stopping $(nodename "$node")"
        ctl "$node" -q stop >/dev/null 2>&1 || true
    fi
    # A node that does not answer but still runs (SIGSTOPped, half-started): by its pid file.
    if [[ -f "$BASE/$node/pid" ]]; then
        local pid
        pid="$(cat "$BASE/$node/pid")"
        # only if that pid is this node's VM (its environment names the node's env file)
        if [[ -n "$pid" ]] && tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
            grep -qx "RABBITMQ_CONF_ENV_FILE=$BASE/$node/rabbitmq-env.conf"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

down() {
    local node
    for node in "${NODES[@]}"; do
        stop_node "$node" &
    done
    wait
    # iptables rules a partition test may have left behind (they carry this comment)
    if command -v iptables >/dev/null; then
        local rules
        rules="$(iptables -S INPUT 2>/dev/null | grep -- '--comment whistle-cluster' | sed 's/^-A /-D /' || true)"
        while read -r rule; do
            [[ -n "$rule" ]] && { eval "iptables $rule" || true; }
        done <<<"$rules"
    fi
    rm -rf "$BASE"
    say "down"
}

status() {
    local node
    for node in "${NODES[@]}"; do
        if node_running "$node"; then
            say "$(nodename "$node") running (AMQP $(amqp_port "$node"), management $(mgmt_port "$node"))"
        else
            say "$(nodename "$node") not running"
        fi
    done
}

uri() {
    local node out=""
    for node in "${NODES[@]}"; do
        out+="${out:+;}amqp://guest:guest@127.0.0.1:$(amqp_port "$node")/"
    done
    echo "$out"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    uri) uri ;;
    start-node) start_node "${2:?node}" && wait_node "$2" ;;
    stop-node) stop_node "${2:?node}" ;;
    *) echo "usage: $0 up|down|status|uri|start-node N|stop-node N" >&2; exit 2 ;;
esac
