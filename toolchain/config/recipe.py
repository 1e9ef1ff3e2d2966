"""The recipe: model, data, optional training, compression plan, targets and acceptance gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Mode = Literal["float32", "dynamic", "float16", "int8", "int16x8"]
IOType = Literal["float32", "int8", "uint8", "int16"]
APPLICATIONS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths in a recipe are relative to the recipe file."""
    base = (info.context or {}).get("base_dir")
    if value is None or value.is_absolute() or base is None:
        return value
    return (Path(base) / value).resolve()


class ModelSpec(Strict):
    """Exactly one of ``application`` (a Keras application built from scratch) or ``file``."""

    application: Literal[APPLICATIONS] | None = None  # type: ignore[valid-type]
    file: Path | None = Field(None, description=".keras, .h5 or a SavedModel directory")
    alpha: float = Field(1.0, gt=0, le=1.4)
    input_shape: tuple[int, int, int] | None = None
    classes: int = Field(10, ge=2)
    weights: Literal["none", "imagenet"] | None = "none"

    _resolve_file = field_validator("file")(_resolve)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.application is None) == (self.file is None):
            raise ValueError("give exactly one of 'application' or 'file'")
        if self.application and self.input_shape is None:
            raise ValueError("'input_shape' is required with 'application'")
        return self


class Normalization(Strict):
    """Pixels are first scaled to [0, 1]; then ``(x - mean) / std``."""

    mean: float = 0.5
    std: float = Field(0.5, gt=0)


class Split(Strict):
    train: float = Field(0.7, ge=0, lt=1)
    calibration: float = Field(0.1, gt=0, lt=1)
    eval: float = Field(0.2, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self):
        if abs(self.train + self.calibration + self.eval - 1.0) > 1e-6:
            raise ValueError("train + calibration + eval must add up to 1")
        return self


class DataSpec(Strict):
    """Exactly one of ``builtin``, ``folder`` (one sub-folder per class) or ``npz`` (arrays ``x``, ``y``)."""

    builtin: Literal["digits"] | None = None
    folder: Path | None = None
    npz: Path | None = None
    normalization: Normalization = Normalization()
    split: Split = Split()

    _resolve_paths = field_validator("folder", "npz")(_resolve)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.builtin, self.folder, self.npz)) != 1:
            raise ValueError("give exactly one of 'builtin', 'folder' or 'npz'")
        return self


class TrainSpec(Strict):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = 0
    # Keras applications default to 0.999, which leaves moving statistics untrained after a short
    # fit (the model then predicts at chance in inference mode). None keeps the model's own value.
    batchnorm_momentum: float | None = Field(0.9, gt=0, lt=1)


class QuantizeSpec(Strict):
    """``mode``/``io_type`` left out means: what each target profile needs."""

    mode: Mode | None = None
    io_type: IOType | None = None
    per_channel: bool = True
    calibration_samples: int = Field(100, ge=1)


class Acceptance(Strict):
    max_accuracy_drop: float | None = Field(1.0, ge=0, description="points of top-1 below the float reference")
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    min_cosine: float | None = Field(None, ge=-1, le=1)
    max_size_kb: float | None = Field(None, gt=0)


class Recipe(Strict):
    schema_version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec
    data: DataSpec
    train: TrainSpec | None = None
    quantize: QuantizeSpec = QuantizeSpec()
    targets: list[str] = Field(min_length=1)
    acceptance: Acceptance = Acceptance()

    # Filled by the loader, not by the user.
    source: Path | None = Field(None, exclude=True)
    lines: dict[Any, int] = Field(default_factory=dict, exclude=True, repr=False)

    def line_of(self, *path: str | int) -> str:
        """``file:line`` of a field, for error messages."""
        return f"{self.source}:{self.lines.get(tuple(path), 1)}"
