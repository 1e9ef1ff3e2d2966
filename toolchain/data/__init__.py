"""Data sets: builtin digits, image folders, .npz; preprocessing; seeded splits."""

from toolchain.data.datasets import Dataset, InputSpec, load_dataset, source_digest

__all__ = ["Dataset", "InputSpec", "load_dataset", "source_digest"]
