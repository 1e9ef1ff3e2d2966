"""Probes and fits that write data the toolchain ships (op tables, target-profile coefficients), and generators.

Each runs as ``python -m tools.<name>`` from the repository root; see its docstring. Benchmarks, which only
measure, are in ``benchmarks/``.
"""
