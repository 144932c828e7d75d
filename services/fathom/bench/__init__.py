"""Benchmarks: they print numbers; tests never depend on timing."""
