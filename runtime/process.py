"""Process-wide settings for a process that consumes events (`topo run`, and bench/ for both sides).

The cyclic garbage collector runs a young-generation pass every 700 allocations of container
objects by default. Consuming allocates several per event (the envelope, its payload and metadata
models, their dicts, the delivery) and frees them through reference counting; the cycle
collector finds nothing there, but at the default threshold it runs every ~70 events and its full
passes walk every object the process imported. `tune_garbage_collector` freezes what exists at
start-up (modules, the topology, the event classes: never collected, never walked again) and
runs young passes every `young_threshold` allocations instead. Measured by bench/runtime.py.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # a young pass then walks at most this many objects: well under a millisecond


def tune_garbage_collector(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Call once start-up is done (imports, handlers, classes loaded)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
