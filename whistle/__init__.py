"""The ``whistle`` command line: run, drive and inspect Whistle.

nameko runs on eventlet, and everything that imports nameko outside ``nameko
run`` must monkey-patch before any other import: this package is the entry
point of ``whistle up``, so it patches first.
"""

import warnings

with warnings.catch_warnings():
    # eventlet announces its own deprecation on import; nameko 2.x has no other hub.
    warnings.simplefilter("ignore")
    import eventlet

eventlet.monkey_patch()
