"""Helpers of the test suite (not fixtures: those are in tests/conftest.py), imported as `tests.helpers.<module>`."""
