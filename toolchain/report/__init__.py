"""Renderers over the build record. They never re-run a stage."""
