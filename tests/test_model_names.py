"""A model the toolchain builds has the same layer names whatever the process built before: the names reach the
saved model and the artifact's tensor names (a search worker's fifth trial wrote other bytes than a fresh build)."""

from __future__ import annotations

import pytest

from toolchain.config.recipe import ModelSpec

pytestmark = pytest.mark.tf


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(application="MobileNetV2", input_shape=(32, 32, 3), alpha=0.35, classes=10),
        ModelSpec(application="Transformer", input_shape=(8, 8, 1), classes=10),
    ],
    ids=["MobileNetV2", "Transformer"],
)
def test_a_built_model_is_named_the_same_the_third_time(keras, spec):
    from toolchain.models.source import build_model

    first, _, third = (build_model(spec) for _ in range(3))
    keras.layers.GlobalAveragePooling2D()  # and a layer built in between
    assert [layer.name for layer in third.layers] == [layer.name for layer in first.layers]
    assert len({layer.name for layer in third.layers}) == len(third.layers)
    assert third.input_names == first.input_names == [third.layers[0].name]  # what the converter names the input


def test_plain_names_number_a_kind_by_its_order_and_keep_given_names(keras):
    from toolchain.models.source import plain_names

    for _ in range(3):  # the process's counter moves on
        keras.layers.Dense(1)
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(4)(inp)
    h = keras.layers.Dense(4, name="dense")(h)  # a user's name that a renamed layer would take: nothing renamed
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    assert len({layer.name for layer in plain_names(model).layers}) == 4
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(4, name="hidden")(keras.layers.Dense(4)(inp))))
    assert [layer.name for layer in plain_names(model).layers] == ["x", "dense", "hidden", "dense_1"]
