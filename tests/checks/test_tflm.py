"""tflite-micro in a child process: minimum arena by bisection, numerics, crashes as reports."""

import numpy as np
import pytest

from toolchain.checks import tflm
from toolchain.checks.litert import LiteRT

pytestmark = pytest.mark.tf


def test_min_arena_is_exact_to_the_alignment(tiny_conv_int8):
    arena, probes = tflm.min_arena(tiny_conv_int8)
    assert probes > 5
    assert tflm.probe(tiny_conv_int8, arena).ok
    assert not tflm.probe(tiny_conv_int8, arena - tflm.ARENA_ALIGN).ok
    assert not tflm.probe(tiny_conv_int8, int(arena * 0.9)).ok
    recorded = tflm.recorded_arena(tiny_conv_int8, 1 << 16)
    assert recorded is not None and recorded > 0


def test_outputs_match_litert(tiny_conv_int8):
    x = np.random.default_rng(3).uniform(-1, 1, (20, 8, 8, 1)).astype(np.float32)
    arena, _ = tflm.min_arena(tiny_conv_int8)
    (y,), host_ms = tflm.run(tiny_conv_int8, arena, x)
    (ref,) = LiteRT(tiny_conv_int8.read_bytes()).predict(x)
    assert y.shape == (20, 10) and 0 < host_ms < 1000  # a few microseconds per sample on the host
    assert np.abs(y - ref).max() <= 1 / 256 + 1e-6  # at most one int8 step apart


def test_tiny_arena_segfault_is_reported_not_fatal(tiny_conv_int8):
    with pytest.raises(
        tflm.TflmCrash, match=r"killed by SIGSEGV during allocate \(arena 64 bytes\); last op 0 \(CONV_2D\)"
    ) as exc:
        tflm.run(tiny_conv_int8, 64, np.zeros((1, 8, 8, 1), np.float32))
    assert exc.value.exit_code == 10


def test_small_arena_refusal_names_the_stage(tiny_conv_int8):
    arena, _ = tflm.min_arena(tiny_conv_int8)
    with pytest.raises(tflm.TflmCrash, match=r"failed to allocate tensors during allocate"):
        tflm.run(tiny_conv_int8, arena - 64, np.zeros((1, 8, 8, 1), np.float32))


def test_truncated_model_is_valid(tiny_conv_int8):
    from toolchain.tflite_model import TFLiteModel

    cut = tflm.truncated(tiny_conv_int8.read_bytes(), 1)
    m = TFLiteModel(cut)
    assert [op.name for op in m.ops] == ["CONV_2D"]
    assert LiteRT(cut).io()["output"]["shape"] == [1, 6, 6, 8]


def test_a_model_that_aborts_at_every_arena_is_named_with_its_op(keras, tmp_path):
    """Near-zero logits give the softmax an input scale of ~1e-8: tflite-micro aborts (SIGABRT) in allocate at any
    arena size. Small arenas that merely segfault must not be taken for that; the op is found by bisection."""
    from tests.conftest import int8_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10), keras.layers.Softmax()])
    w, b = model.layers[0].get_weights()
    model.layers[0].set_weights([w * 1e-7, b])
    path = tmp_path / "tiny_logits.tflite"
    int8_model(model, path)
    with pytest.raises(tflm.TflmCrash) as exc:
        tflm.min_arena(path)
    assert str(exc.value) == "aborts (SIGABRT) at every arena size up to 64 MB, in op 1 (SOFTMAX)"


def test_a_segfault_at_a_small_arena_only_means_too_small(tiny_conv_int8):
    arena, _ = tflm.min_arena(tiny_conv_int8, hint=64)  # 64 bytes segfaults: the search goes on upwards
    assert tflm.probe(tiny_conv_int8, arena).ok and not tflm.probe(tiny_conv_int8, 64).ok


def test_one_worker_survives_its_crashing_forks(tiny_conv_int8):
    """The bisection's probes run in forks of one worker: a segfaulting probe kills only its fork."""
    with tflm.Prober(tiny_conv_int8, 1) as p:
        crashed = p.probe(16)
        assert not crashed.ok and (crashed.signal or crashed.returncode == 3)
        assert p.proc.poll() is None  # the worker lives on
        good = p.probe(1 << 16)
        assert good.ok and good.stage == "invoke 0"
        assert p.probe(4096).ok == tflm.probe(tiny_conv_int8, 4096).ok  # the same answer as a fresh process
