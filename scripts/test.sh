#!/usr/bin/env bash
# The whole test suite, as `make test` (and so CI) runs it, in two phases:
#
# 1. Everything that shares nothing global, in two pytest processes at once: the unit and
#    integration tests in one, the end-to-end tests in the other. Each test already has
#    its own RabbitMQ vhost, Redis key prefix and processes, and each pytest process its
#    own PostgreSQL database, so the two cannot see each other. Run one after the other,
#    they left a core idle about half the time (most of an end-to-end test is waiting
#    for processes and the browser), and the suite took over its 25-minute budget on a
#    slow VM.
# 2. The fault suite (marker `faults`), alone: it stops RabbitMQ and Redis under every
#    connection on the machine, so nothing else may run beside it.
#
# The cluster scenarios (marker `cluster`) are left out here, as in plain `pytest`;
# .ci/run runs them afterwards.
#
# pytest-xdist is not used: it hangs at start-up once eventlet has monkey-patched the
# threads its channels run on (tests/conftest.py patches before anything is imported).
#
# Each line a shard prints is prefixed with its name, so both can be followed live.
# Every phase runs even when an earlier one failed; the exit status is pytest's first
# failure (1 for failed tests, 5 for none collected, which is a real problem here too).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTEST=${PYTEST:-.venv/bin/pytest}
EVERYDAY="not cluster and not faults"  # a later -m replaces the one in pyproject's addopts

shard() {  # shard NAME PYTEST-ARGS...: pytest with each output line prefixed by [NAME]
    local name=$1
    shift
    # Ctrl-C must stop pytest, which then tears its processes down and prints why, and
    # must not stop sed, which passes that on. A script's background commands may start
    # with SIGINT ignored (bash's `trap -` cannot undo that): coreutils' env gives pytest
    # the default back; sed ignores it.
    env --default-signal=INT "$PYTEST" "$@" 2>&1 | (trap '' INT; exec sed -u "s/^/[$name] /")
}

status=0
note() {  # note STATUS: keep the first failure's status
    if [ "$1" -ne 0 ] && [ "$status" -eq 0 ]; then status=$1; fi
}

# Ctrl-C reaches every pytest here itself (they share the terminal's process group): wait
# for them to tear their processes down, then stop without starting the next phase.
interrupted=0
trap 'interrupted=1' INT

finish() {  # finish PID: its exit status, once it has exited (a Ctrl-C interrupts `wait`)
    local code
    while true; do
        wait "$1"
        code=$?
        if [ "$code" -gt 128 ] && kill -0 "$1" 2>/dev/null; then continue; fi
        return "$code"
    done
}

echo "== phase 1: unit and integration | end-to-end, side by side"
shard unit+integration -m "$EVERYDAY" tests/unit tests/integration tests/test_compose.py &
inner=$!
# Everything but the first shard's folders: the end-to-end tests, and any folder added later.
shard e2e -m "$EVERYDAY" tests --ignore=tests/unit --ignore=tests/integration \
    --ignore=tests/test_compose.py &
outer=$!
finish "$inner"; note $?
finish "$outer"; note $?
if [ "$interrupted" -eq 1 ]; then
    echo "== interrupted: the fault suite was not run"
    exit 130
fi

echo "== phase 2: the fault suite, alone"
"$PYTEST" -m "faults and not cluster"; note $?

exit "$status"
