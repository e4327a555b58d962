"""How much work a default run does: shared by the command line and ``bench.run``.

Long enough to be *sustained* on this VM: its own speed jumps by up to nearly a
factor of two between five-second windows (``python -m bench.drift``;
``docs/benchmarks.md``, "Why phases are long"), so a phase of a few seconds measured
the machine's moment as much as Whistle. Each of these takes about 20 s here.
"""

FLAT_OUT_ISSUES = 6000
BASELINE_MESSAGES = 10000
