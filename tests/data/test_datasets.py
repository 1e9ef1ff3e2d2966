"""Data sources: builtin digits, image folders and .npz, fitted to the model input and split by seed."""

import numpy as np
import pytest
from PIL import Image

from toolchain.config.recipe import DataSpec
from toolchain.data import load_dataset
from toolchain.errors import DataShapeError, InputError, MissingInputError


def test_digits_resized_replicated_and_split():
    d = load_dataset(DataSpec(builtin="digits"), (16, 16, 3), 10)
    assert d.x_train.shape[1:] == (16, 16, 3)
    assert len(d.y_train) + len(d.y_calib) + len(d.y_eval) == 1797
    assert len(d.y_eval) == 359
    assert np.allclose(d.x_eval[..., 0], d.x_eval[..., 2])  # gray replicated
    assert -1.0 <= d.x_eval.min() and d.x_eval.max() <= 1.0 and d.x_eval.min() < -0.9
    again = load_dataset(DataSpec(builtin="digits"), (16, 16, 3), 10)
    assert again.digest == d.digest
    other = load_dataset(DataSpec.model_validate({"builtin": "digits", "split": {"seed": 1}}), (16, 16, 3), 10)
    assert other.digest != d.digest


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset(DataSpec(folder=tmp_path), (8, 8, 1), 2)
    assert d.labels == ("cat", "dog")
    assert d.x_train.shape[1:] == (8, 8, 1)
    assert sorted(np.concatenate([d.y_train, d.y_calib, d.y_eval]).tolist()) == [0] * 5 + [1] * 5


def test_npz_uint8_scaled_when_asked(tmp_path):
    x = np.full((20, 8, 8), 255, np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 3)
    d = load_dataset(DataSpec(npz=tmp_path / "d.npz", resize=True, normalization={}), (8, 8, 1), 3)
    assert np.allclose(d.x_eval, 1.0)  # 255 -> 1.0 -> (1 - 0.5) / 0.5
    with pytest.raises(DataShapeError, match=r"input 'x' expects samples of shape \(8, 8, 1\), the data has \(8, 8\)"):
        load_dataset(DataSpec(npz=tmp_path / "d.npz"), (8, 8, 1), 3)  # arrays are used as given unless asked


def test_unreadable_data_folder(tmp_path):
    with pytest.raises(MissingInputError, match="data folder not found") as exc:
        load_dataset(DataSpec(folder=tmp_path / "nope"), (8, 8, 1), 2)
    assert exc.value.exit_code == 22
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PNG or JPEG"):
        load_dataset(DataSpec(folder=tmp_path / "empty"), (8, 8, 1), 2)


def test_data_that_does_not_fit_the_model(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 8, 8, 4), np.float32), y=np.arange(10) % 2)
    with pytest.raises(DataShapeError, match="4 channels") as exc:
        load_dataset(DataSpec(npz=tmp_path / "d.npz", resize=True), (8, 8, 3), 10)
    assert exc.value.exit_code == 6
    with pytest.raises(DataShapeError, match="data has 10 classes but the model outputs 5"):
        load_dataset(DataSpec(builtin="digits"), (8, 8, 1), 5)
