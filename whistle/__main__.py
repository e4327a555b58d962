"""``python -m whistle``: the same command line as the ``whistle`` script, for a checkout
whose code is not the one the virtualenv installed (a git worktree, a CI clone)."""

import sys

from whistle.cli import cli

sys.exit(cli())
