"""Models that are not Keras: a float ``.tflite`` quantized by the toolchain, PyTorch (``.pt2``) and ONNX models.

    python -m benchmarks.model_sources [--out /tmp/bench-sources] [--only tflite,torch,onnx,digits]

Cases (each a set of real ``python -m toolchain build`` runs, as a user makes them):

- ``tflite``: ``recipes/mobilenet.yaml`` is built for phone-cpu and cortex-m7 with int8 ``minmax`` and
  ``percentile`` ranges (the Keras route: the converter traces the Keras model); its float32 artifact is then given
  back as ``model.file`` and quantized by the toolchain's flatbuffer route with the same two methods, on the same
  data. The top-1 of each pair is compared (the issue asks: within 0.5 point).
- ``torch`` / ``onnx``: torchvision's ``mobilenet_v3_small`` (built with ``weights=None``: nothing downloads, so its
  weights are random) saved as ``.pt2`` and exported as ``.onnx``, built for phone-cpu, cortex-m7, ethos-u55-128,
  ethos-u85-256 and edgetpu: float32 parity against the framework's outputs, int8 agreement and SNR, Vela's NPU op
  share, TRANSPOSE ops.
- ``digits``: a small CNN trained in PyTorch on the digits (``tools/train_torch_digits.py``), its int8 artifact on
  cortex-m7 with two calibration methods against the PyTorch float top-1 (the issue asks: within 1.0 point).

Writes benchmarks/results/model_sources.json (a case not run keeps its previous numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from benchmarks import common

NAME = "model_sources"
CASES = ("tflite", "torch", "onnx", "digits")
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
    run = {"tflite": tflite_case}
    for case in only:
        print(f"{case} ...", file=sys.stderr)
        data[case] = run[case](args.out / case)
    common.write_result(NAME, data, args.results, argv)
    print(tflite_table(data["tflite"]) if "tflite" in data else "")
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


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    return {"tflite_table": tflite_table(d["tflite"]) if "tflite" in d else "(not run)"}


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
    return out


if __name__ == "__main__":
    sys.exit(main())
