"""The benchmark suite: each module measures one thing and writes one JSON file of results.

    python -m benchmarks.<name> [--help]       # run one benchmark again: writes benchmarks/results/<name>.json
    python -m benchmarks.render                # docs/benchmarks.md and the detail pages, from the results
    pytest -m benchmark                        # the stored results against benchmarks/references.yaml

A benchmark module has ``NAME``, its cases as data (``CASES``), ``main(argv)`` (measures and writes its result
through ``benchmarks.common.write_result``), ``values(result)`` (the strings its template in
``benchmarks/templates/<name>.md`` is filled with), ``metrics(result)`` (the numbers ``references.yaml`` holds), and
optionally ``DETAIL`` and ``detail(result)`` (a page of its own under docs/). Probes and fits that write data the
toolchain ships are in ``tools/``.
"""

#: name -> (what it measures, where its numbers are shown), in the order of docs/benchmarks.md
SUITE = {
    "warm_build": ("Warm rebuild (unchanged inputs, everything cached)", "below"),
    "compression": (
        "Compression steps (QAT, pruning, L1 filters) on digits MobileNetV2",
        "[benchmark-compression.md](benchmark-compression.md)",
    ),
    "sensor_anomaly": ("Anomaly autoencoder on synthetic vibration data, four targets", "below"),
    "calibration": (
        "Calibration methods, symmetric activations, equalization, bias correction",
        "[benchmark-calibration.md](benchmark-calibration.md), summary below",
    ),
    "convert": ("Convert stage of a cold build, calibrate-once route vs the converter per target", "below"),
    "mcu_cost": ("MCU latency estimate against published MLPerf Tiny measurements", "below"),
    "edgetpu_cost": ("Edge TPU latency estimate against Coral's published table", "below"),
    "build_vs_handwritten": ("Cold and warm build against a hand-written script", "below"),
    "model_sources": ("A float .tflite quantized by the toolchain; PyTorch .pt2 models on five targets", "below"),
    "lowrank_cluster": (
        "Low-rank factorization, weight clustering, feature distillation, 4-bit weights",
        "[benchmark-lowrank-cluster.md](benchmark-lowrank-cluster.md), summary below",
    ),
    "transformer": ("A Transformer encoder (attention, LayerNorm, GELU rewritten) on four targets", "below"),
    "smoothquant": ("SmoothQuant on a Transformer with planted outlier channels", "below"),
    "int4_select": ("4-bit weights chosen by measured sensitivity: encoder and MobileNetV2", "below"),
    "charlm": ("A byte-level decoder LM with prefill/decode signatures and a KV cache, phone", "below"),
    "calibration_traps": ("Calibration traps: glitched calibration images, KL on ReLU6", "below"),
    "search": ("Device-constrained model search on a local Dask cluster; 2 workers against 1", "below"),
    "distillation": ("Distillation kinds and schemes on a pruned MobileNetV2, three seeds each", "below"),
    "rounding": ("Quantization parameters optimized: minmax, mse, EQ, ADMM, AdaRound (per-tensor, 4-bit)", "below"),
}
