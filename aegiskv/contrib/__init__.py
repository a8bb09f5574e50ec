"""Integrations with other frameworks, each an optional import: ``aegiskv.contrib.django`` needs Django."""
