"""The ``whistle`` command line: run, drive and inspect Whistle.

nameko runs on eventlet, and everything that imports nameko outside ``nameko
run`` must monkey-patch before any other import: this package is the entry
point of ``whistle up``, so it patches first.
"""

import eventlet

eventlet.monkey_patch()
