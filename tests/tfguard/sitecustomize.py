"""Put on PYTHONPATH by tests/conftest.py in the fast tier: a Python subprocess that imported a heavy module
(TensorFlow, LiteRT's interpreter, tflite-micro, Vela) says so in a file of $TOOLCHAIN_TFGUARD_DIR at exit."""

import atexit
import os
import sys

HEAVY = ("tensorflow", "tf_keras", "tflite_micro", "ethosu", "ai_edge_litert.interpreter")


def _report() -> None:
    folder = os.environ.get("TOOLCHAIN_TFGUARD_DIR")
    bad = [name for name in HEAVY if name in sys.modules]
    if folder and bad and os.path.isdir(folder):
        with open(os.path.join(folder, f"{os.getpid()}.txt"), "w") as f:
            f.write(f"{', '.join(bad)} by `{' '.join(sys.argv)}`")


atexit.register(_report)
