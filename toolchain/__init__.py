"""toolchain: build, compress and validate neural networks for edge devices."""

__version__ = "0.1.0"
