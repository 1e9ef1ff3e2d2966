"""TFLite conversion in each quantize mode (``convert`` loads TensorFlow when first used)."""

from toolchain.convert.plan import ConvertPlan

__all__ = ["ConvertPlan", "convert"]


def __getattr__(name: str):
    if name == "convert":
        from toolchain.convert.tflite import convert

        return convert
    raise AttributeError(name)
