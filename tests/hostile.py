"""The corpus of bad inputs: each case makes its files in a folder and says what the CLI must answer.

Used twice: ``test_hostile.py`` runs each case in-process and checks its exit code and one-line message, and
runs them all again through ``python -m toolchain`` in subprocesses to check that none reaches an internal error
or a traceback. Cases that need TensorFlow (model files) say so (``tf=True``): their tests are marked ``tf``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import REPO

MOBILENET = (REPO / "recipes" / "mobilenet.yaml").read_text()

# A recipe whose data stage runs before any model is built: data errors appear in about a second, no TensorFlow.
DATA_RECIPE = """schema_version: 1
name: bad
model: {{application: MobileNetV2, alpha: 0.35, input_shape: [32, 32, 3], classes: 10}}
data: {data}
train: {{epochs: 1}}
targets: [phone-cpu]
"""


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes the inputs into a folder, returns the CLI arguments
    code: int
    message: str  # a part of the one-line error
    tf: bool = False  # needs TensorFlow to make the input


def recipe(text: str, name: str = "recipe.yaml"):
    def make(d: Path) -> list[str]:
        (d / name).write_text(text)
        return ["recipe", "check", str(d / name)]

    return make


def raw_recipe(data: bytes):
    def make(d: Path) -> list[str]:
        (d / "recipe.yaml").write_bytes(data)
        return ["recipe", "check", str(d / "recipe.yaml")]

    return make


def npz_build(**arrays):
    def make(d: Path) -> list[str]:
        np.savez(d / "data.npz", **arrays)
        (d / "recipe.yaml").write_text(DATA_RECIPE.format(data="{npz: data.npz, resize: true}"))
        return ["build", str(d / "recipe.yaml"), "--out", str(d / "out")]

    return make


def images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 8)).astype(np.float32)


def labels(n: int = 40) -> np.ndarray:
    return np.arange(n) % 10


def nan_pixel() -> dict:
    x = images()
    x[3, 2, 2] = np.nan
    return {"x": x, "y": labels()}


def empty_npz(d: Path) -> list[str]:
    (d / "data.npz").write_bytes(b"")
    (d / "recipe.yaml").write_text(DATA_RECIPE.format(data="{npz: data.npz, resize: true}"))
    return ["build", str(d / "recipe.yaml"), "--out", str(d / "out")]


def one_class_folder(d: Path) -> list[str]:
    from PIL import Image

    (d / "imgs" / "cat").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), i * 30, np.uint8)).save(d / "imgs" / "cat" / f"{i}.png")
    (d / "recipe.yaml").write_text(DATA_RECIPE.format(data="{folder: imgs}"))
    return ["build", str(d / "recipe.yaml"), "--out", str(d / "out")]


def no_train_split(d: Path) -> list[str]:
    np.savez(d / "data.npz", x=images(), y=labels())
    split = "{npz: data.npz, resize: true, split: {train: 0.0, calibration: 0.5, eval: 0.5}}"
    (d / "recipe.yaml").write_text(DATA_RECIPE.format(data=split))
    return ["build", str(d / "recipe.yaml"), "--out", str(d / "out")]


def model_file(kind: str):
    def make(d: Path) -> list[str]:
        from toolchain.models.compat import keras

        k = keras()
        if kind == "two-input":
            a, b = k.Input((8, 8, 1)), k.Input((8, 8, 1))
            out = k.layers.Dense(10)(k.layers.Flatten()(k.layers.Add()([a, b])))
            model = k.Model([a, b], out)
        else:  # a vector model, as for sensor data
            model = k.Sequential([k.Input((16,)), k.layers.Dense(10)])
        model.save(d / "model.keras")
        text = DATA_RECIPE.format(data="{builtin: digits}").replace(
            "{application: MobileNetV2, alpha: 0.35, input_shape: [32, 32, 3], classes: 10}",
            "{file: model.keras, classes: 10}",
        )
        (d / "recipe.yaml").write_text(text)
        return ["build", str(d / "recipe.yaml"), "--out", str(d / "out")]

    return make


def bundle(change: str):
    """A small hand-made bundle (no build needed) with one defect."""

    def make(d: Path) -> list[str]:
        manifest = {"schema": "toolchain.bundle/1", "name": "x", "targets": [], "files": {}}
        members = {"x-1/manifest.json": None}
        if change == "files-as-list":
            manifest["files"] = ["a.tflite"]
        path = d / "b.tar.gz"
        with tarfile.open(path, "w:gz", compresslevel=1) as tar:
            if change == "huge-member":  # 300 MiB of zeros: about 300 KB compressed
                info = tarfile.TarInfo("x-1/zeros.bin")
                info.size = 300 << 20
                tar.addfile(info, _Zeros(info.size))
            for name in members:
                data = json.dumps(manifest).encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return ["verify", str(path)]

    return make


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


def huge_buffer_tflite(d: Path) -> list[str]:
    """A flatbuffer that declares a 1 TiB buffer outside the file."""
    from importlib.util import find_spec

    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    sine = Path(find_spec("tflite_micro").origin).parent / "python" / "tflite_micro" / "sine_float.tflite"
    blob = sine.read_bytes()
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    m.buffers[1].data, m.buffers[1].offset, m.buffers[1].size = None, 1000, 1 << 40
    b = flatbuffers.Builder(len(blob) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    (d / "m.tflite").write_bytes(bytes(b.Output()))
    return ["inspect", str(d / "m.tflite")]


def fifo_recipe(d: Path) -> list[str]:
    """A FIFO named like a recipe: nothing ever writes to it (opening it to read would block)."""
    os.mkfifo(d / "recipe.yaml")
    return ["recipe", "check", str(d / "recipe.yaml")]


def bad_profile(change: tuple[str, str]):
    """``recipe check`` of a recipe for cortex-m7, with a --targets-dir whose cortex-m7 profile has a defect."""

    def make(d: Path) -> list[str]:
        (d / "profiles").mkdir()
        text = (REPO / "targets" / "cortex-m7.yaml").read_text()
        assert change[0] in text
        (d / "profiles" / "cortex-m7.yaml").write_text(text.replace(*change))
        (d / "recipe.yaml").write_text(
            MOBILENET.replace("[phone-cpu, cortex-m7, ethos-u55-128, edgetpu]", "[cortex-m7]")
        )
        return ["--targets-dir", str(d / "profiles"), "recipe", "check", str(d / "recipe.yaml")]

    return make


DEFAULT_MODEL = "{application: MobileNetV2, alpha: 0.35, input_shape: [32, 32, 3], classes: 10}"


def missing_file_build(model: str, data: str):
    """A build whose recipe names a model or data file that is not there."""

    def make(d: Path) -> list[str]:
        (d / "recipe.yaml").write_text(DATA_RECIPE.format(data=data).replace(DEFAULT_MODEL, model))
        return ["build", str(d / "recipe.yaml"), "--out", str(d / "out")]

    return make


def _alias_bomb() -> str:
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(9):
        prev, cur = chr(97 + i), chr(98 + i)
        rows.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(rows) + "\n"


CASES = [
    # recipes and profiles
    Case("utf16-recipe", raw_recipe(MOBILENET.encode("utf-16")), 3, ":1: the file is UTF-16 text; save it as UTF-8"),
    Case("latin1-recipe", raw_recipe(("# café\n" + MOBILENET).encode("latin-1")), 3, ":1: not UTF-8 text (byte 0xe9"),
    Case("empty-int-tag", recipe(MOBILENET.replace("epochs: 12", "epochs: !!int")), 3, ":16: cannot read '' as int"),
    Case("python-tag", recipe(MOBILENET.replace("epochs: 12", "epochs: !!python/name:os.system")), 3, "is not allowed"),
    Case(
        "duplicate-key",
        recipe(MOBILENET.replace("epochs: 12", "epochs: 12\n  epochs: 3")),
        3,
        ":17: duplicate key 'epochs'",
    ),
    Case("alias-bomb", recipe(_alias_bomb()), 3, ":1: YAML anchors and aliases (&name, *name) are not allowed"),
    Case(
        "oversized-recipe", recipe(MOBILENET + "# " + "x" * (1 << 20) + "\n"), 3, "is too large for a recipe or profile"
    ),
    Case(
        "hundred-targets",
        recipe(
            MOBILENET.replace(
                "[phone-cpu, cortex-m7, ethos-u55-128, edgetpu]", "[" + ", ".join(["phone-cpu"] * 100) + "]"
            )
        ),
        3,
        "targets: List should have at most 64 items",
    ),
    Case("deep-nesting", recipe("a: " + "[" * 5000 + "]" * 5000 + "\n"), 3, "YAML nested too deeply"),
    Case("empty-recipe", recipe(""), 3, ":1: the file is empty"),
    Case(
        "nul-byte", raw_recipe(b"schema_version: 1\nname: x\x00y\n"), 3, ":2: character #x0000 is not allowed in YAML"
    ),
    Case("long-name", recipe(MOBILENET.replace("name: mobilenet", "name: " + "x" * 300)), 3, ":4: name: 'xxxx"),
    Case(
        "target-dotdot",
        recipe(MOBILENET.replace("[phone-cpu, cortex-m7, ethos-u55-128, edgetpu]", "[../x]")),
        3,
        "targets.0: '../x' is not a name",
    ),
    Case(
        "tflite-with-train",
        recipe(MOBILENET.replace("application: MobileNetV2", "file: m.tflite")),
        3,
        "a .tflite model is used as trained: 'train' and 'compress' need a Keras model",
    ),
    Case(
        "binary-weights",
        recipe(MOBILENET.replace("per_channel: true", "per_channel: true\n  weight_bits: 1")),
        3,
        "quantize.weight_bits: binary weights run on none of the toolchain's runtimes: LiteRT 2.3 and tflite-micro",
    ),
    Case(
        "self-distill-tflite",
        recipe(
            "schema_version: 1\nname: s\nmodel: {file: m.tflite}\ndata: {builtin: digits}\n"
            "compress:\n  - {step: finetune, distill: {mode: self, heads: [x]}}\ntargets: [phone-cpu]\n"
        ),
        15,
        ":5: compress: a .tflite model is used as trained: compression steps (distillation, self-distillation too)",
    ),
    Case(
        "compress-regression",
        recipe(MOBILENET.replace("name: mobilenet", "name: r\ntask: regression") + "compress:\n  - {step: qat}\n"),
        3,
        "compress: the compression steps fine-tune classifiers (task: classification)",
    ),
    Case(
        "infinite-lr",
        recipe(MOBILENET.replace("learning_rate: 0.002", "learning_rate: .inf")),
        3,
        "train.learning_rate: Input should be a finite number",
    ),
    Case(
        "targets-show-dotdot",
        lambda d: ["targets", "show", "../recipes/mobilenet"],
        4,
        "'../recipes/mobilenet' is not a target name",
    ),
    Case(
        "build-target-dotdot",
        lambda d: ["build", str(REPO / "recipes" / "mobilenet.yaml"), "--out", str(d / "o"), "--target", "../x"],
        4,
        "'../x' is not a target name",
    ),
    Case(
        "target-named-v",
        lambda d: ["build", str(REPO / "recipes" / "mobilenet.yaml"), "--out", str(d / "o"), "--target", "-v"],
        4,
        "'-v' is not a target name",
    ),
    Case("dev-zero-recipe", lambda d: ["recipe", "check", "/dev/zero"], 3, "/dev/zero: not a regular file"),
    Case("fifo-recipe", fifo_recipe, 3, "recipe.yaml: not a regular file (a device, FIFO or socket)"),
    Case(
        "invalid-timestamp",
        recipe(MOBILENET.replace("epochs: 12", "epochs: !!timestamp not-a-date")),
        3,
        ":16: cannot read 'not-a-date' as timestamp",
    ),
    Case(
        "profile-batch-0", bad_profile(("batch: 1", "batch: 0")), 3, "cortex-m7.yaml:7: batch: Input should be greater"
    ),
    Case("profile-batch-negative", bad_profile(("batch: 1", "batch: -3")), 3, "(got -3)"),
    Case("profile-batch-huge", bad_profile(("batch: 1", "batch: 100000")), 3, "batch: Input should be less than"),
    Case(
        "empty-float-layer",
        recipe(MOBILENET.replace("calibration_samples: 100", "calibration_samples: 100\n  float_layers: ['']")),
        3,
        ":25: quantize.float_layers.0: an empty layer name or pattern names no layer",
    ),
    Case(
        "huge-epochs",
        recipe(MOBILENET.replace("epochs: 12", "epochs: " + "1" + "0" * 30)),
        3,
        ":16: train.epochs: Input should be less than or equal to 10000",
    ),
    Case(
        "huge-calibration-samples",
        recipe(MOBILENET.replace("calibration_samples: 100", "calibration_samples: 100000000000")),
        3,
        ":24: quantize.calibration_samples: Input should be less than or equal to 1000000",
    ),
    Case(
        "huge-input-shape",
        recipe(MOBILENET.replace("[96, 96, 3]", "[100000, 100000, 3]")),
        3,
        ":8: model.input_shape.0: Input should be less than or equal to 4096",
    ),
    Case("negative-seed", recipe(MOBILENET.replace("seed: 0\n  batchnorm", "seed: -1\n  batchnorm")), 3, "train.seed"),
    Case(
        "duplicate-targets",
        recipe(MOBILENET.replace("[phone-cpu, cortex-m7, ethos-u55-128, edgetpu]", "[phone-cpu, phone-cpu]")),
        3,
        ":25: targets.1: 'phone-cpu' is listed twice",
    ),
    Case(
        "misspelt-key",
        recipe(MOBILENET.replace("epochs: 12", "epoch: 12")),
        3,
        ":16: train.epoch: unknown key (did you mean 'epochs'?)",
    ),
    Case(
        "misspelt-section",
        recipe(MOBILENET.replace("quantize:", "quantise:")),
        3,
        ":21: quantise: unknown key (did you mean 'quantize'?)",
    ),
    Case("missing-recipe", lambda d: ["recipe", "check", str(d / "none.yaml")], 22, "none.yaml: file not found"),
    Case(
        "missing-model-file",
        missing_file_build("{file: none.keras, classes: 10}", "{builtin: digits}"),
        22,
        "model.file: ",
    ),
    Case(
        "missing-data-file", missing_file_build(DEFAULT_MODEL, "{npz: none.npz}"), 22, "none.npz: data file not found"
    ),
    Case("missing-data-folder", missing_file_build(DEFAULT_MODEL, "{folder: none}"), 22, "none: data folder not found"),
    # data
    Case("nan-pixel", npz_build(**nan_pixel()), 17, "1 of 40 samples hold NaN or infinity; the first is sample 3"),
    Case("one-hot-labels", npz_build(x=images(), y=np.eye(10)[labels()]), 6, "labels are one-hot, shape (40, 10)"),
    Case(
        "float-labels",
        npz_build(x=images(), y=labels() + 0.5),
        6,
        "labels must be integer class ids; sample 0 has label 0.5",
    ),
    Case(
        "negative-label", npz_build(x=images(), y=labels() - 1), 6, "sample 0 has label -1; class ids run from 0 to 9"
    ),
    Case("string-samples", npz_build(x=np.array(["a"] * 40), y=labels()), 6, "samples are of type <U1, not numbers"),
    Case("empty-npz-file", empty_npz, 5, "cannot read .npz"),
    Case(
        "zero-samples",
        npz_build(x=np.zeros((0, 8, 8), np.float32), y=np.zeros(0, np.int64)),
        6,
        "the data set has no samples",
    ),
    Case("length-mismatch", npz_build(x=images(40), y=labels(39)), 6, "x has 40 samples but y has 39"),
    Case("one-class-folder", one_class_folder, 6, "a classifier needs at least two classes"),
    Case("zero-train-split", no_train_split, 6, "data.split.train gives 0 training samples"),
    # models
    Case(
        "two-input-model",
        model_file("two-input"),
        6,
        "images feed a single-input model; the model has 2 inputs",
        tf=True,
    ),
    Case("vector-model", model_file("vector"), 6, "expects samples of shape (16,), the data has (8, 8)", tf=True),
    # bundles and models on disk
    Case("manifest-files-list", bundle("files-as-list"), 13, "'files' must map file names to sha256 digests"),
    Case("bundle-huge-member", bundle("huge-member"), 13, "exceeds the bounds of a bundle"),
    Case("missing-bundle", lambda d: ["verify", str(d / "none.tar.gz")], 22, "none.tar.gz: file not found"),
    Case("tflite-1tib-buffer", huge_buffer_tflite, 5, "buffer 1 points outside the file"),
]
