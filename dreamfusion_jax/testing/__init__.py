"""Helpers for tests and benchmarks: tiny saved models and the PyTorch reference step.

Not used by training; importable wherever the package is installed, so tests and benchmarks need
no path edits.
"""
