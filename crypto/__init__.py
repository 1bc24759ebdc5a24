"""caseline's protocol core: pure functions and state machines over the wire objects.

Nothing in this package performs I/O, reads the clock or draws randomness on its
own; callers pass ``now`` (milliseconds) and ``rng`` in.  See PROTOCOL.md.
"""
