"""Models that are not Keras: a float ``.tflite`` quantized by the toolchain, PyTorch (``.pt2``) and ONNX models.

    python -m benchmarks.model_sources [--out /tmp/bench-sources] [--only tflite,torch,onnx,digits]

Cases (each a set of real ``python -m toolchain build`` runs, as a user makes them):

- ``tflite``: ``recipes/mobilenet.yaml`` is built for phone-cpu and cortex-m7 with int8 ``minmax`` and
  ``percentile`` ranges (the Keras route: the converter traces the Keras model); its float32 artifact is then given
  back as ``model.file`` and quantized by the toolchain's flatbuffer route with the same two methods, on the same
  data. The top-1 of each pair is compared (the issue asks: within 0.5 point).
- ``torch``: torchvision's ``mobilenet_v3_small`` (``weights=None``: nothing downloads; trained here 4 epochs in
  PyTorch on the digits at 96x96x3) saved as ``.pt2`` and exported as ``.onnx`` (opset 17), each built for
  phone-cpu, cortex-m7, ethos-u55-128, ethos-u85-256 and edgetpu: float32 parity against PyTorch's / onnxruntime's
  outputs (phone-cpu), int8 agreement and SNR against them, each target's pass or its failures, Vela's NPU op
  share, TRANSPOSE ops.
- ``digits``: a small CNN trained in PyTorch on the digits (``tools/train_torch_digits.py``), its int8 artifact on
  cortex-m7 with two calibration methods against the PyTorch float top-1 (the issue asks: within 1.0 point).

Writes benchmarks/results/model_sources.json (a case not run keeps its previous numbers).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import yaml

from benchmarks import common

NAME = "model_sources"
CASES = ("tflite", "torch", "digits")
TORCH_TARGETS = ("phone-cpu", "cortex-m7", "ethos-u55-128", "ethos-u85-256", "edgetpu")
METHODS = ("minmax", "percentile")
TFLITE_TARGETS = ("phone-cpu", "cortex-m7")


def _recipe(path: Path, body: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _mobilenet(name: str, **changes) -> dict:
    body = yaml.safe_load((common.REPO / "recipes" / "mobilenet.yaml").read_text())
    body |= {"name": name, "targets": list(TFLITE_TARGETS)}
    for key, value in changes.items():
        body[key] = value if not isinstance(value, dict) else {**body.get(key, {}), **value}
    return body


def tflite_case(out: Path) -> dict:
    """The Keras route and the flatbuffer route of one trained MobileNetV2, per calibration method and target."""
    rows = {}
    for method in METHODS:
        keras = common.toolchain_build(
            _recipe(out / f"keras-{method}.yaml", _mobilenet(f"keras-{method}", quantize={"calibration": method})),
            out / "builds",
        ).record
        rows[method] = {"keras": _numbers(keras)}
    floating = _mobilenet("keras-float32", quantize={"mode": "float32"}, targets=["phone-cpu"])
    common.toolchain_build(_recipe(out / "keras-float32.yaml", floating), out / "builds", accept=common.RECORD_WRITTEN)
    artifact = out / "builds" / "keras-float32" / "phone-cpu" / "keras-float32_float32.tflite"
    for method in METHODS:
        body = _mobilenet(f"flatbuffer-{method}", quantize={"calibration": method})
        body["model"] = {"file": str(artifact), "classes": 10}
        body.pop("train")
        record = common.toolchain_build(_recipe(out / f"flatbuffer-{method}.yaml", body), out / "builds").record
        rows[method]["flatbuffer"] = _numbers(record)
        rows[method]["route"] = record["results"][0]["quantization"]["route"]
    return {"artifact": artifact.name, "eval_samples": keras["eval_samples"], "methods": rows}


def _digits_data(body: dict) -> dict:
    """The digits as ``recipes/mobilenet.yaml`` gives them (its split), resized to the model's input."""
    return {"builtin": "digits", "normalization": {"mean": 0.5, "std": 0.5}, "split": body["data"]["split"]}


TORCH_EPOCHS = 4


def _train_torch(net, body: dict, epochs: int) -> float:
    """Train ``net`` in PyTorch on the recipe's digits training split (96x96x3, as the toolchain prepares them);
    its float top-1 on the eval split. Random weights would give outputs near 1e-6, which int8 cannot hold."""
    import numpy as np
    import torch

    from toolchain.config.recipe import DataSpec
    from toolchain.data.datasets import load_dataset
    from toolchain.data.sources import InputSpec
    from tools.train_torch_digits import fit

    data = load_dataset(DataSpec(**_digits_data(body)), [InputSpec("x", (96, 96, 3))])
    x = torch.from_numpy(np.ascontiguousarray(data.x_train.transpose(0, 3, 1, 2)))
    fit(net, x, torch.from_numpy(data.y_train.astype(np.int64)), epochs, 2e-3)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:  # torchvision's momentum 0.01 leaves a short fit's running statistics untrained: recompute them
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the passes below
    with torch.no_grad():
        for idx in torch.arange(len(x)).split(64):
            net(x[idx])
    net.eval()
    with torch.no_grad():
        xe = torch.from_numpy(np.ascontiguousarray(data.x_eval.transpose(0, 3, 1, 2)))
        return float((net(xe).argmax(1).numpy() == data.y_eval).mean())


def torch_case(out: Path) -> dict:
    """torchvision's MobileNetV3-Small from a .pt2 on five targets: parity, int8 numbers, NPU share."""
    import torch
    import torchvision

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    float_top1 = _train_torch(net, _mobilenet("x"), TORCH_EPOCHS)
    pt2 = out / "mobilenet_v3_small.pt2"
    sample = torch.zeros(1, 3, 96, 96)
    torch.export.save(torch.export.export(net, (sample,)), pt2)
    result = {"epochs": TORCH_EPOCHS, "torch_top1": float_top1, **_five_targets(pt2, out, "mnv3")}
    onnx_file = out / "mobilenet_v3_small.onnx"
    torch.onnx.export(net, (sample,), str(onnx_file), dynamo=False, opset_version=17)  # the legacy exporter
    result["onnx"] = _five_targets(onnx_file, out, "mnv3-onnx")
    return result


def _five_targets(path: Path, out: Path, name: str) -> dict:
    """A float32 build on phone-cpu (parity with the framework) and int8 builds on the five targets."""
    base = _mobilenet("x")
    model = {"file": str(path), "classes": 10}
    floating = {"schema_version": 1, "name": f"{name}-float32", "model": model, "data": _digits_data(base)}
    floating |= {"quantize": {"mode": "float32"}, "targets": ["phone-cpu"], "acceptance": {"max_accuracy_drop": 100}}
    f = common.toolchain_build(
        _recipe(out / f"{name}-float.yaml", floating), out / "builds", accept=common.RECORD_WRITTEN
    )
    (fr,) = f.record["results"]
    quantized = floating | {"name": f"{name}-int8", "quantize": {"mode": "int8"}, "targets": list(TORCH_TARGETS)}
    q = common.toolchain_build(
        _recipe(out / f"{name}-int8.yaml", quantized), out / "builds", accept=common.RECORD_WRITTEN
    )
    targets = {}
    for r in q.record["results"]:
        acc = r.get("accelerator") or {}
        targets[r["target"]] = {
            "passed": r["passed"],
            "failures": [x["message"] for x in r["failures"]],
            "agreement": r["metrics"]["top1_agreement"] if r["metrics"] else None,
            "top1": r["metrics"]["top1"] if r["metrics"] else None,
            "snr_db": round(r["metrics"]["snr_db"], 2) if r["metrics"] else None,
            "bytes": r["size_bytes"],
            "transposes": r["ops"].get("TRANSPOSE", 0),
            "ops_on": acc.get("ops_on"),
            "ops_total": acc.get("ops_total"),
            "fallbacks": r["sections"].get("vela", {}).get("details", {}).get("cpu_fallbacks"),
        }
    return {
        "float32": {
            "cosine": fr["metrics"]["cosine"],
            "samples": fr["metrics"]["samples"],
            "ops": fr["ops"],
            "reference_top1": fr["metrics"]["reference_top1"],
            "bytes": fr["size_bytes"],
            "convert_s": f.record["timings_s"].get("model"),
        },
        "int8": targets,
    }


def digits_case(out: Path) -> dict:
    """A CNN trained in PyTorch on the digits: int8 on cortex-m7 with two calibration methods."""
    from tools.train_torch_digits import main as train

    pt2 = out / "digits_cnn.pt2"
    train([str(pt2)])
    rows = {}
    for method in METHODS:
        body = {"schema_version": 1, "name": f"torch-digits-{method}", "model": {"file": str(pt2), "classes": 10}}
        body |= {"data": {"builtin": "digits"}, "quantize": {"calibration": method}, "targets": ["cortex-m7"]}
        record = common.toolchain_build(_recipe(out / f"{method}.yaml", body), out / "builds").record
        (r,) = record["results"]
        m = r["metrics"]
        rows[method] = {"top1": m["top1"], "reference_top1": m["reference_top1"], "snr_db": round(m["snr_db"], 2)}
    return {"eval_samples": record["eval_samples"], "methods": rows}


def _numbers(record: dict) -> dict:
    """Per target: top-1, SNR against the float reference (dB) and the artifact's bytes."""
    return {
        r["target"]: {
            "top1": r["metrics"]["top1"],
            "snr_db": round(r["metrics"]["snr_db"], 2),
            "bytes": r["size_bytes"],
        }
        for r in record["results"]
    }


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-sources"))
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated cases to run (default: all)")
    args = ap.parse_args(argv)
    only = [c for c in args.only.split(",") if c]
    unknown = sorted(set(only) - set(CASES))
    if unknown:
        ap.error(f"--only: unknown case {', '.join(unknown)} (cases: {', '.join(CASES)})")
    try:
        data = common.load_result(NAME, args.results)["data"]
    except FileNotFoundError:
        data = {}
    run = {"tflite": tflite_case, "torch": torch_case, "digits": digits_case}
    for case in only:
        print(f"{case} ...", file=sys.stderr)
        data[case] = run[case](args.out / case) | {"run": f"{datetime.date.today()}, --only {case}"}
    common.write_result(NAME, data, args.results, argv)
    for case, table in TABLES.items():
        if case in data:
            print(table(data[case]))
    return 0


def tflite_table(d: dict) -> str:
    rows = []
    for method, r in d["methods"].items():
        for t in TFLITE_TARGETS:
            k, f = r["keras"][t], r["flatbuffer"][t]
            rows.append(
                [
                    method,
                    t,
                    f"{k['top1'] * 100:.2f} / {f['top1'] * 100:.2f}",
                    f"{(f['top1'] - k['top1']) * 100:+.2f}",
                    f"{k['snr_db']:.2f} / {f['snr_db']:.2f}",
                    f"{k['bytes']:,} / {f['bytes']:,}",
                ]
            )
    header = ["ranges", "target", "top-1 % (Keras / .tflite route)", "points", "SNR dB", "bytes"]
    return common.table(header, rows)


def onnx_table(d: dict) -> str:
    return torch_table(d["onnx"]) if "onnx" in d else "(not run)"


def torch_table(d: dict) -> str:
    rows = []
    for t, r in d["int8"].items():
        npu = f"{r['ops_on']} / {r['ops_total']}" if r["ops_total"] else "—"
        why = "pass" if r["passed"] else "; ".join(r["failures"])[:160]
        top1 = f"{r['top1'] * 100:.2f}"
        rows.append(
            [t, top1, f"{r['agreement']:.4f}", f"{r['snr_db']:.1f}", f"{r['bytes']:,}", r["transposes"], npu, why]
        )
    header = ["target (int8)", "top-1 %", "agreement", "SNR dB", "bytes", "TRANSPOSE", "NPU (TPU) ops", "result"]
    return common.table(header, rows)


def digits_table(d: dict) -> str:
    rows = [
        [
            m,
            f"{r['reference_top1'] * 100:.2f}",
            f"{r['top1'] * 100:.2f}",
            f"{(r['top1'] - r['reference_top1']) * 100:+.2f}",
        ]
        for m, r in d["methods"].items()
    ]
    return common.table(["ranges", "PyTorch float top-1 %", "cortex-m7 int8 top-1 %", "points"], rows)


def _cos(c: float) -> str:
    """A cosine near 1 as ``1 - 1.4e-13`` (printed with its digits it is just 1.000...)."""
    return f"1 − {1 - c:.1e}" if c < 1 else "1"


TABLES = {"tflite": tflite_table, "torch": torch_table, "digits": digits_table}
SUBTABLES = {"onnx": onnx_table}


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    out = {f"{case}_table": table(d[case]) if case in d else "(not run)" for case, table in TABLES.items()}
    out |= {f"{case}_run": f"(run {d[case]['run']})" if "run" in d.get(case, {}) else "" for case in CASES}
    out["onnx_table"] = onnx_table(d["torch"]) if "torch" in d else "(not run)"
    o = d.get("torch", {}).get("onnx", {}).get("float32")
    out["onnx_float"] = (
        f"float32 artifact: cosine {_cos(o['cosine'])} against onnxruntime on {o['samples']} eval samples, "
        f"{o['bytes']:,} bytes, ops {o['ops']}"
        if o
        else ""
    )
    f = d.get("torch", {}).get("float32")
    out["torch_float"] = (
        f"PyTorch float top-1 {f['reference_top1'] * 100:.2f} % after {d['torch']['epochs']} epochs; float32 artifact: "
        f"cosine {_cos(f['cosine'])} against the PyTorch program on {f['samples']} eval samples, {f['bytes']:,} bytes, "
        f"ops {f['ops']}"
        if f
        else ""
    )
    return out


def metrics(result: dict) -> dict[str, float]:
    d = result["data"]
    out = {}
    if "tflite" in d:
        gaps = [
            abs(r["flatbuffer"][t]["top1"] - r["keras"][t]["top1"]) * 100
            for r in d["tflite"]["methods"].values()
            for t in TFLITE_TARGETS
        ]
        out["tflite.max_gap_points"] = round(max(gaps), 2)
    if "onnx" in d.get("torch", {}):
        out["onnx.float32_cosine"] = round(d["torch"]["onnx"]["float32"]["cosine"], 6)
    if "torch" in d:
        out["torch.float32_cosine"] = round(d["torch"]["float32"]["cosine"], 6)
        u55 = d["torch"]["int8"]["ethos-u55-128"]
        out["torch.u55_npu_ops_pct"] = round(100 * u55["ops_on"] / u55["ops_total"], 1)
    if "digits" in d:
        drops = [(r["reference_top1"] - r["top1"]) * 100 for r in d["digits"]["methods"].values()]
        out["digits.max_drop_points"] = round(max(drops), 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
