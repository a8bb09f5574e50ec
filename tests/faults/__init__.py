"""Fault-injection harness: real processes in network namespaces, nemeses, a workload and a checker.

``netns``: a private network of namespaces per test. ``cluster``: AegisKV
nodes or a Redis Cluster on it. ``nemesis``: kill -9, restart, SIGSTOP,
partitions, each timed. ``workload``: recorded unique-key writes (redis-py
and the native client), a reader, read-back. ``checker``: lost writes, stale
acknowledgements, unavailability windows, stray errors. ``run``: one run,
start to summary. Used by tests/test_faults.py and bench/faults.py.
"""
