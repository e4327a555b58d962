"""``python -m bench``: see ``bench.cli``."""

import whistle  # noqa: F401  (monkey-patches eventlet before anything else is imported)
from bench.cli import bench

bench(prog_name="python -m bench")
