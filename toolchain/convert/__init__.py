"""TFLite conversion in each quantize mode."""

from toolchain.convert.tflite import ConvertPlan, convert

__all__ = ["ConvertPlan", "convert"]
