#!/usr/bin/env bash
# Prints the interpreter `make venv` builds .venv on (Makefile: PYTHON).
#
# The distribution's python3.11 comes first where there is one that can make a venv:
# Debian builds it with profile-guided and link-time optimisation, as the production
# image's (python:3.11-slim, Dockerfile) is built. pyenv's default build, which is
# `python3` on this project's machines, has neither: Whistle's services spend about a
# seventh more CPU an issue on it (docs/benchmarks.md, "Session 9: another machine, and
# the interpreter").
# Anything else falls back to `python3`; the Makefile then checks it is 3.11 or newer.
set -euo pipefail

for candidate in /usr/bin/python3.11 /usr/bin/python3; do
    if [ -x "$candidate" ] && "$candidate" -c \
        'import sys, ensurepip, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null
    then
        echo "$candidate"
        exit 0
    fi
done
echo python3
