"""Bytes on the wire: the reactor, the worker pool, and sans-IO codecs."""
