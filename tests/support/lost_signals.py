"""A signal handler's exception lost the way Python loses it: raised in a weakref callback.

The handler runs wherever the main thread is. In a weakref callback or a ``__del__``,
Python hands what it raises to ``sys.unraisablehook`` ("Exception ignored in ..."), and
the code the signal interrupted goes on as if nothing had happened."""

from __future__ import annotations

import gc
import sys
import weakref


class _Anything:
    pass


def raised_in_a_weakref_callback(monkeypatch, call) -> list[type]:
    """Run ``call()`` in a weakref callback; the types of what it raised, which were lost
    (kept by a stand-in ``sys.unraisablehook`` instead of printed)."""
    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lost.append)
    thing = _Anything()
    ref = weakref.ref(thing, lambda _: call())
    del thing
    gc.collect()
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    assert ref() is None  # the callback ran, and nothing was raised here
    return [type(u.exc_value) for u in lost]
