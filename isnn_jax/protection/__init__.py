"""The pure protection core: licences, keyed transforms, near keys, the objective, hardening and
the train step that combines them.

Everything here is a pure function of its arguments (the licence file format aside): no
checkpoint, no data pipeline, no command line. May import `base` only; every other layer
builds on it.
"""
