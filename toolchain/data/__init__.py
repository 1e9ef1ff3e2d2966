"""Data sets: builtin digits, image folders, .npz; preprocessing; seeded splits."""

from toolchain.data.datasets import Dataset, load_dataset, source_digest

__all__ = ["Dataset", "load_dataset", "source_digest"]
