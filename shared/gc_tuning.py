"""The garbage collector, tuned for a service process.

CPython frees almost every object by reference counting; the cyclic collector is
for the rest. By default it runs whenever 700 more container objects have been
allocated than freed. A service handling a few hundred events a second crossed
that several times a second, and one collection in a hundred walked the whole
heap, most of it what the imports left behind (modules, classes, pydantic's
validators). Measured flat out (``docs/benchmarks.md``, session 6): 4 % to 8 % of
each service's CPU went to collections, notify's full ones at about 45 ms each.

With a first generation of 20,000 objects, a handler's objects have long died by
reference counting when the collector looks, so it runs a few times a minute under
load, and still finds any cycles; the services' peak RSS moved by about 3 MiB.

Not :func:`gc.freeze`: it would also make the collector skip whatever is alive when
it is called, for good, and set-up runs in test processes too.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 20)


def tune_gc_for_service() -> None:
    """Raise the collection thresholds (:data:`THRESHOLDS`). Safe to call again."""
    gc.set_threshold(*THRESHOLDS)
