"""``recipes/charlm.yaml``: a byte-level decoder language model with a KV cache, float32 and int8 on the phone.

    python -m benchmarks.charlm [--out /tmp/charlm]

Three builds into one folder (the trained model is one cache entry): the recipe (int8) cold, then the same recipe
with ``quantize.mode: int16x8`` (16-bit activations and cache, 8-bit weights) and ``float32`` (the float
two-signature export). Every number is read from the builds'
``build.json``: per plan the perplexity of the held-out text against the Keras model's, the next-token agreement
at every step, the artifact's size, the KV cache (bytes, per token, the longest context the phone's RAM holds),
the median decode step and prefill. Writes benchmarks/results/charlm.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from benchmarks import common

NAME = "charlm"
CASES = {"recipe": "recipes/charlm.yaml", "plans": ["int8", "int16x8", "float32"]}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/charlm"))
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    base = yaml.safe_load((common.REPO / CASES["recipe"]).read_text())
    base["data"]["text"] = str(common.REPO / "recipes" / base["data"]["text"])
    rows, cold = [], None
    for plan in CASES["plans"]:
        recipe = args.out / f"charlm-{plan}.yaml"
        recipe.write_text(yaml.safe_dump(base | {"name": f"charlm-{plan}", "quantize": {"mode": plan}}))
        built = common.toolchain_build(recipe, args.out / "build")
        cold = cold or round(built.wall_s)
        (r,) = built.record["results"]
        m, mem, lat = r["metrics"], r["memory"], r["latency"]
        litert = r["sections"]["litert"]["details"]
        rows.append(
            {
                "plan": plan,
                "size_bytes": r["size_bytes"],
                "reference_perplexity": m["reference_perplexity"],
                "perplexity": m["perplexity"],
                "agreement": m["top1_agreement"],
                "decode_ms": lat["ms"],
                "prefill_ms": litert["prefill_ms"],
                "kv_cache_bytes": mem["details"]["kv_cache_bytes"],
                "kv_bytes_per_token": mem["details"]["kv_cache_bytes_per_token"],
                "context": mem["details"]["context"],
                "max_context": mem["details"]["max_context"],
                "decode_steps": litert["decode_steps"],
                "passed": r["passed"],
            }
        )
    rec = built.record
    data = {"cold_s": cold, "eval_windows": rec["eval_samples"], "params": _params(args.out / "build"), "rows": rows}
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def _params(build: Path) -> int:
    from toolchain.models.source import load_model_file

    (path,) = (build / ".cache" / "model").glob("*/model.keras")
    return int(load_model_file(path).count_params())


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = [
        [
            r["plan"],
            f"{r['size_bytes'] / 1024:.1f}",
            f"{r['reference_perplexity']:.3f}",
            f"{r['perplexity']:.3f}",
            f"{100 * (r['perplexity'] / r['reference_perplexity'] - 1):+.2f}",
            f"{r['agreement']:.4f}",
            f"{r['decode_ms']:.3f}",
            f"{r['prefill_ms']:.3f}",
            f"{r['kv_cache_bytes']:,}",
            f"{r['kv_bytes_per_token']:,}",
            f"{r['max_context']:,}",
            "pass" if r["passed"] else "FAIL",
        ]
        for r in d["rows"]
    ]
    header = [
        "plan",
        "KB",
        "Keras perplexity",
        "perplexity",
        "rise %",
        "next-token agreement",
        "decode ms",
        "prefill ms",
        "KV cache B",
        "B / token",
        "max context (RAM)",
        "gates",
    ]
    first = d["rows"][0]
    return {
        "table": common.table(header, rows),
        "cold_s": str(d["cold_s"]),
        "eval_windows": str(d["eval_windows"]),
        "steps": f"{first['decode_steps']:,}",
        "context": str(first["context"]),
        "params": f"{d['params']:,}",
    }


def metrics(result: dict) -> dict[str, float]:
    out = {}
    for r in result["data"]["rows"]:
        out[f"{r['plan']}.perplexity_rise_pct"] = round(100 * (r["perplexity"] / r["reference_perplexity"] - 1), 2)
        out[f"{r['plan']}.agreement"] = round(r["agreement"], 4)
    return out


if __name__ == "__main__":
    sys.exit(main())
