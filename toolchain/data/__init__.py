"""Data sets: builtin digits, image folders, .npz; preprocessing; seeded splits (``datasets``, which loads NumPy
when first used); where the data comes from (``sources``)."""

from toolchain.data.sources import InputSpec, source_digest

__all__ = ["Dataset", "InputSpec", "load_dataset", "source_digest"]


def __getattr__(name: str):
    if name in ("Dataset", "load_dataset"):
        from toolchain.data import datasets

        return getattr(datasets, name)
    raise AttributeError(name)
