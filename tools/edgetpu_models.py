"""Build the Keras-applications architectures of Coral's Edge TPU benchmark table as int8 .tflite files.

Random weights (no download: the shapes decide the time), calibrated on 4 random samples, uint8 input/output
as the Edge TPU compiler expects. Files are cached in the work folder; tools/fit_edgetpu.py reads them.

    python -m tools.edgetpu_models [--work build/edgetpu-bench]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
#: name -> (keras.applications constructor, input size, kwargs)
MODELS = {  # the rows of Coral's table (coral.ai/docs/edgetpu/benchmarks) that Keras applications can build
    "mobilenet_v1_1.0_224": ("MobileNet", 224, {"alpha": 1.0}),
    "mobilenet_v2_1.0_224": ("MobileNetV2", 224, {"alpha": 1.0}),
    "densenet121_224": ("DenseNet121", 224, {}),
    "inception_resnet_v2_299": ("InceptionResNetV2", 299, {}),
    "resnet50_v1_299": ("ResNet50", 299, {}),
    "resnet50_v2_299": ("ResNet50V2", 299, {}),
    "resnet152_v2_299": ("ResNet152V2", 299, {}),
    "vgg16_224": ("VGG16", 224, {}),
    "vgg19_224": ("VGG19", 224, {}),
}


def build(name: str, work: Path) -> Path:
    path = work / f"{name}.tflite"
    if path.exists():
        return path
    import keras
    import tensorflow as tf

    ctor, size, kwargs = MODELS[name]
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3), batch_size=1)  # static shapes, as the compiler needs
    model = getattr(keras.applications, ctor)(weights=None, input_tensor=inp, classes=1000, **kwargs)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(4):
            yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    t0 = time.perf_counter()
    blob = conv.convert()
    path.write_bytes(blob)
    print(f"{name}: {len(blob) / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("build/edgetpu-bench"))
    ap.add_argument("models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        build(name, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
