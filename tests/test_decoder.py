"""A byte-level decoder language model: its text data, its export with prefill and decode signatures and an explicit
KV cache, int8 on the phone, the cache's bytes from the artifact, and where it is refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import write_recipe
from toolchain.config.recipe import DataSpec
from toolchain.data.text import load_text
from toolchain.errors import DataShapeError, InputError, MissingInputError


def generated_text(sentences: int = 400, seed: int = 0) -> str:
    """English-like text from a small grammar (nothing is downloaded)."""
    rng = np.random.default_rng(seed)
    subjects = ["the model", "a device", "the phone", "an engineer", "the cache", "a token"]
    verbs = ["reads", "writes", "measures", "quantizes", "ships", "checks"]
    objects = ["the weights", "every layer", "the arena", "its numbers", "the text", "one byte"]
    return " ".join(
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(['.', ',', ' again.'])}"
        for _ in range(sentences)
    )


def test_text_is_cut_into_windows_and_split_in_order(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(256)) * 4)  # 1,024 bytes: 15 windows of 64 and the next token
    d = load_text(DataSpec(text=path, split={"train": 0.6, "calibration": 0.2, "eval": 0.2}), 64)
    assert d.xs_train[0].shape == (9, 64) and d.xs_calib[0].shape == (3, 64) and d.xs_eval[0].shape == (3, 64)
    x = np.concatenate([d.xs_train[0], d.xs_calib[0], d.xs_eval[0]]).ravel()
    assert (x == np.arange(15 * 64) % 256).all()  # in order: the eval windows are the text's end
    assert (d.y_eval == (d.xs_eval[0] + 1) % 256).all()  # the next byte at every position
    with pytest.raises(DataShapeError, match="fewer than 3 windows"):
        load_text(DataSpec(text=path), 512)


def test_text_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(InputError, match="not a regular file"):
        load_text(DataSpec(text=fifo), 8)
    with pytest.raises(InputError, match="not a regular file"):
        load_text(DataSpec(text="/dev/zero"), 8)  # stat says 0 bytes; reading never ends
    with pytest.raises(MissingInputError, match="file not found"):
        load_text(DataSpec(text=tmp_path / "missing.txt"), 8)


RECIPE = """
schema_version: 1
name: tiny-lm
task: language_model
model:
  application: Decoder
  decoder: {{dim: 16, heads: 2, blocks: 2, ffn: 32, context: 16}}
data:
  text: text.txt
  split: {{train: 0.7, calibration: 0.1, eval: 0.2}}
train: {{epochs: 2, batch_size: 32, learning_rate: 0.01}}
quantize: {{mode: {mode}}}
targets: [{targets}]
"""


def test_a_language_model_is_task_model_and_data_together(tmp_path, run_cli):
    (tmp_path / "text.txt").write_text(generated_text())
    recipe = write_recipe(tmp_path, RECIPE.format(mode="int8", targets="phone-cpu"))
    code, out, err = run_cli("recipe", "check", recipe)
    assert code == 0, err
    bad = write_recipe(tmp_path, RECIPE.format(mode="int8", targets="phone-cpu").replace("task: language_model\n", ""))
    code, _, err = run_cli("recipe", "check", bad)
    assert code == 3 and "'task: language_model' with 'model: {application: Decoder}'" in err
    code, _, err = run_cli("recipe", "check", write_recipe(tmp_path, RECIPE.format(mode="float16", targets="x")))
    assert code == 3 and "quantize.mode int8, int16x8 or float32" in err
    code, _, err = run_cli("recipe", "check", write_recipe(tmp_path, RECIPE.format(mode="int8", targets="cortex-m7")))
    assert code == 9 and "cortex-m7 runs litert, tflm; a decoder language model" in err


def test_a_decoder_too_large_to_build_here_is_refused_by_the_recipe(tmp_path, run_cli):
    (tmp_path / "text.txt").write_text("abc" * 100)
    body = RECIPE.format(mode="int8", targets="phone-cpu").replace("ffn: 32, context: 16", "ffn: 8192, context: 16")
    body = body.replace("dim: 16", "dim: 1024").replace("blocks: 2", "blocks: 4")  # 84 M parameters
    code, _, err = run_cli("recipe", "check", write_recipe(tmp_path, body))
    assert code == 3 and "parameters: more than the 50,000,000" in err, err


@pytest.mark.tf
def test_the_float_export_computes_what_the_keras_model_computes(tmp_path):
    """prefill (a padded prompt) and decode (token by token, the cache handed on) give the training graph's logits
    at every position, to 1e-4; the cache is (1, heads, context, head width) per block, k and v."""
    from ai_edge_litert.interpreter import Interpreter

    from toolchain.config.recipe import ModelSpec
    from toolchain.models.compat import keras
    from toolchain.models.decoder import build_decoder, cache_names, export

    keras().utils.set_random_seed(0)
    spec = ModelSpec(application="Decoder", decoder={"dim": 16, "heads": 2, "blocks": 2, "ffn": 32, "context": 12})
    model = build_decoder(spec)
    assert model.count_params() == spec.decoder.params  # the bound the recipe checks is the model's real size
    tokens = np.random.default_rng(0).integers(0, 256, (1, 12)).astype(np.int32)
    want = model.predict(tokens, verbose=0)[0]
    it = Interpreter(model_content=export(model, tmp_path))
    prefill, decode = it.get_signature_runner("prefill"), it.get_signature_runner("decode")
    out = prefill(tokens=np.r_[tokens[0, :5], np.zeros(7, np.int32)][None])
    np.testing.assert_allclose(out["logits"][0, :5], want[:5], atol=1e-4)
    cache = {n: out[n] for n in cache_names(2)}
    assert {n: c.shape for n, c in cache.items()} == {n: (1, 2, 12, 8) for n in ("k_0", "v_0", "k_1", "v_1")}
    for p in range(5, 12):
        out = decode(token=tokens[:, p : p + 1], pos=np.array([p], np.int32), **cache)
        cache = {n: out[n] for n in cache_names(2)}
        np.testing.assert_allclose(out["logits"][0], want[p], atol=1e-4)


@pytest.mark.tf
def test_int8_decoder_on_the_phone_reports_its_kv_cache_from_the_artifact(tmp_path, run_cli):
    """Trained and built from the recipe: int8 weights, activations and cache (one scale for a cache tensor in
    prefill's output, decode's input and decode's output); the KV-cache bytes the report gives are the cache
    tensors' (2 x blocks x context x dim bytes at int8); max_context from the phone's RAM."""
    from ai_edge_litert.interpreter import Interpreter

    (tmp_path / "text.txt").write_text(generated_text())
    recipe = write_recipe(tmp_path, RECIPE.format(mode="int8", targets="phone-cpu"))
    code, out, err = run_cli("build", recipe, "--out", tmp_path / "b", "--json")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    m, mem = r["metrics"], r["memory"]
    assert m["task"] == "language_model" and 1 < m["reference_perplexity"] < 256 and 1 < m["perplexity"] < 256
    assert 0 <= m["top1_agreement"] <= 1 and r["passed"]
    blob = (tmp_path / "b" / "tiny-lm" / "phone-cpu" / "tiny-lm_int8.tflite").read_bytes()
    it = Interpreter(model_content=blob)
    pre, dec = (it.get_signature_runner(s) for s in ("prefill", "decode"))
    cache = {n: d for n, d in dec.get_input_details().items() if n not in ("token", "pos")}
    assert sorted(cache) == ["k_0", "k_1", "v_0", "v_1"]
    assert sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in cache.values()) == 2 * 2 * 16 * 16
    assert mem["details"]["kv_cache_bytes"] == 2 * 2 * 16 * 16 and mem["details"]["kv_cache_bytes_per_token"] == 64
    for n, d in cache.items():
        assert d["dtype"] == np.int8
        assert d["quantization"] == pre.get_output_details()[n]["quantization"]
        assert d["quantization"] == dec.get_output_details()[n]["quantization"]
    ram = 262144 * 1024  # phone-cpu's ram_kb
    assert mem["details"]["max_context"] == (ram - len(blob)) // 64
    assert mem["ram_bytes"] == 2 * 2 * 16 * 16 + len(blob)
    report = (tmp_path / "b" / "tiny-lm" / "phone-cpu" / "report.md").read_text()
    assert "KV cache at the full context (16 tokens) | 1,024 bytes" in report
    # int16x8: the same model (cached), 16-bit activations and cache: the cache's bytes double
    recipe16 = write_recipe(tmp_path, RECIPE.format(mode="int16x8", targets="phone-cpu"), "r16.yaml")
    code, out, err = run_cli("build", recipe16, "--out", tmp_path / "b16", "--json")
    assert code == 0, err
    (r16,) = json.loads(out)["results"]
    assert r16["mode"] == "int16x8" and r16["memory"]["details"]["kv_cache_bytes"] == 2 * 2 * 2 * 16 * 16
    blob16 = (tmp_path / "b16" / "tiny-lm" / "phone-cpu" / "tiny-lm_int16x8.tflite").read_bytes()
    dec16 = Interpreter(model_content=blob16).get_signature_runner("decode")
    assert {d["dtype"] for n, d in dec16.get_input_details().items() if n not in ("token", "pos")} == {np.int16}
