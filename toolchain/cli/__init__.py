"""Thin Click commands: options in, library calls, errors to exit codes."""
