"""How much work a default run does: shared by the command line and ``bench.run``.

Long enough to be *sustained* on this VM: its speed swings by a quarter from one
five-second window to the next (``docs/benchmarks.md``, session 6), so a phase of a
few seconds measured the machine's moment as much as Whistle. Each of these takes
about 20 s here.
"""

FLAT_OUT_ISSUES = 6000
BASELINE_MESSAGES = 10000
