"""toolchain/stages/validate.py's rules on hand-made sections: the headline pick and non-finite outputs."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.record import HEADLINE, Accelerator, Latency, Memory, Metrics, Section
from toolchain.stages.validate import _nonfinite, headline


def metrics(top1):
    return Metrics(top1=top1, samples=10)


def test_no_sections_give_an_empty_headline():
    assert headline({}) == {**{f: None for f in HEADLINE}, "runtime": None}


def test_the_last_provider_in_profile_order_wins():
    sections = {
        "litert": Section(
            check="litert",
            provides=["metrics", "latency"],
            runtime="ai-edge-litert",
            metrics=metrics(0.9),
            latency=Latency(ms=1.0, kind="measured", source="host"),
        ),
        "tflm": Section(
            check="tflm",
            provides=["metrics", "memory"],
            runtime="tflite-micro",
            metrics=metrics(0.8),
            memory=Memory(ram_bytes=1000),
        ),
    }
    top = headline(sections)
    assert top["metrics"].top1 == 0.8 and top["runtime"] == "tflite-micro"
    assert top["latency"].ms == 1.0 and top["memory"].ram_bytes == 1000
    assert top["accelerator"] is None and top["reload"] is None and top["firmware"] is None
    reversed_order = headline({"tflm": sections["tflm"], "litert": sections["litert"]})
    assert reversed_order["metrics"].top1 == 0.9 and reversed_order["runtime"] == "ai-edge-litert"


def test_a_provider_that_could_not_produce_its_field_still_owns_it():
    sections = {
        "litert": Section(check="litert", provides=["metrics"], runtime="ai-edge-litert", metrics=metrics(0.9)),
        "tflm": Section(check="tflm", provides=["metrics"], runtime="tflite-micro", metrics=None),
    }
    top = headline(sections)
    assert top["metrics"] is None and top["runtime"] == "tflite-micro"


def test_a_field_set_by_a_check_that_does_not_provide_it_is_ignored():
    sections = {
        "vela": Section(
            check="vela",
            provides=["accelerator"],
            accelerator=Accelerator(name="npu", ops_on=3, ops_total=4),
            metrics=metrics(0.1),  # not authoritative
            runtime="vela",
        )
    }
    top = headline(sections)
    assert top["accelerator"].share == 0.75 and top["metrics"] is None and top["runtime"] is None


def test_runtime_follows_metrics_not_the_last_section():
    sections = {
        "litert": Section(check="litert", provides=["metrics"], runtime="ai-edge-litert", metrics=metrics(0.9)),
        "gpu": Section(
            check="gpu", provides=["latency"], runtime="gpu", latency=Latency(ms=2.0, kind="estimate", source="x")
        ),
    }
    assert headline(sections)["runtime"] == "ai-edge-litert"


def test_finite_outputs_are_no_failure():
    outputs = [np.zeros((5, 3), np.float32), np.ones((5, 2, 2), np.float32)]
    assert _nonfinite("litert", outputs, "ai-edge-litert") == []


def test_nan_and_inf_in_any_output_count_each_sample_once():
    a = np.zeros((6, 3), np.float32)
    b = np.zeros((6, 2, 2), np.float32)
    a[4, 1] = np.nan
    b[2, 0, 1] = np.inf
    b[4, 1, 1] = -np.inf  # sample 4 again: counted once
    failures = _nonfinite("tflm", [a, b], "tflite-micro")
    assert [(f.kind, f.check) for f in failures] == [("nonfinite", "tflm")]
    assert failures[0].message == (
        "tflm: the artifact's outputs on tflite-micro are NaN or infinite on 2 eval samples "
        "(the first is eval sample 2)"
    )


@pytest.mark.parametrize(("runtime", "named"), [(None, "litert"), ("ai-edge-litert", "ai-edge-litert")])
def test_the_message_names_the_runtime_or_else_the_check(runtime, named):
    out = np.zeros((3, 1), np.float32)
    out[0, 0] = np.nan
    (failure,) = _nonfinite("litert", [out], runtime)
    assert failure.message.startswith(f"litert: the artifact's outputs on {named} are NaN or infinite on 1 eval")
    assert failure.message.endswith("(the first is eval sample 0)")
