"""Model sources whose float graph is a flatbuffer made here: PyTorch (``.pt2``) and ONNX models, converted by
litert-torch (an ONNX graph through onnx2torch first).

``require_extra`` refuses a recipe whose converter is not installed before any work; ``input_specs`` reads a
model's inputs (images channels last, as the artifacts take them); ``convert_float`` writes the float flatbuffer
and returns the framework's own outputs on the eval split, the reference every artifact is compared with.

PyTorch runs in a child process (spawned): torch and TensorFlow in one process can crash it (torch.export
segfaulted after TensorFlow had been imported), and a crash of the converter then stops only the child.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from toolchain.config.recipe import ModelSpec
from toolchain.errors import MissingExtraError

#: per model kind: the modules its route imports, and the extra that installs them
EXTRAS = {
    "torch": (("torch", "litert_torch"), "torch"),
    "onnx": (("onnx", "onnxruntime", "onnx2torch", "torch", "litert_torch"), "onnx"),
}


def require_extra(spec: ModelSpec) -> None:
    """One line naming the ``pip install`` when the model's converter is missing."""
    if spec.kind not in EXTRAS:
        return
    modules, extra = EXTRAS[spec.kind]
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise MissingExtraError(
            f"model.file: {spec.file.name} needs {', '.join(missing)}, not installed: pip install 'toolchain[{extra}]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module set to None
        return False


def input_specs(spec: ModelSpec, layout: str | None = None) -> list:
    require_extra(spec)
    if spec.kind == "onnx":  # no PyTorch needed to read an ONNX graph
        from toolchain.models import onnx_route

        return onnx_route.input_specs(onnx_route.load(spec.file), layout)
    return _in_child(_input_specs, spec.file)


def convert_float(spec: ModelSpec, data, out: Path, layout: str | None = None) -> list:
    """Write the model's float flatbuffer to ``out``; return its framework's outputs on the eval split."""
    require_extra(spec)
    if spec.kind == "onnx":
        return _in_child(_convert_onnx, spec.file, list(data.xs_eval), out, layout)
    return _in_child(_convert, spec.file, list(data.xs_eval), out)


def _input_specs(path: Path) -> list:
    from toolchain.models import pytorch

    return pytorch.input_specs(pytorch.load(path))


def _convert_onnx(path: Path, xs: list, out: Path, layout: str | None) -> list:
    from toolchain.models import onnx_route, pytorch

    model = onnx_route.load(path)
    specs = onnx_route.input_specs(model, layout)
    reference = onnx_route.run(path, specs, xs)
    out.write_bytes(pytorch.to_tflite(onnx_route.to_torch(model, specs), specs))
    return reference


def _convert(path: Path, xs: list, out: Path) -> list:
    from toolchain.models import pytorch

    program = pytorch.load(path)
    specs = pytorch.input_specs(program)
    batch = pytorch.user_inputs(program)[0][1][0] or 64
    reference = pytorch.run(program.module(), specs, xs, batch)
    out.write_bytes(pytorch.to_tflite(program.module(), specs))
    return reference


def _in_child(fn, *args):
    """``fn(*args)`` in a spawned process; its ``ToolchainError`` is raised here, a crash is one line."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from toolchain.errors import ConversionError

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise ConversionError(f"PyTorch crashed the process converting the model ({fn.__name__[1:]})") from None
