"""Test support for AegisKV and its plugin authors: local nodes, a simulated network, contract suites."""
