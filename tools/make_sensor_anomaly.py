"""Write the data and the untrained model of recipes/sensor-anomaly.yaml (seeded: the same data and weights each run).

    python -m tools.make_sensor_anomaly [--out recipes/data]

Data: 2,000 windows of a 3-axis vibration sensor, 32 samples per axis, flattened to 96 features (the layout a
microcontroller's ring buffer gives). A healthy machine vibrates at its running frequency with its harmonics and
some noise; 6 % of the windows are faults (a bearing defect adds a high-frequency component and impacts, an
imbalance doubles one axis's amplitude) and are labelled 1. Model: a dense autoencoder 96-32-8-32-96 with seeded
random weights; the recipe trains it to reconstruct the windows (task: anomaly), so faults reconstruct worse.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WINDOW, AXES = 32, 3


def windows(n: int = 2000, faults: float = 0.06, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / WINDOW
    f0 = rng.uniform(2.5, 3.5, (n, 1, 1))  # running frequency, cycles per window
    phase = rng.uniform(0, 2 * np.pi, (n, AXES, 1))
    gain = np.array([1.0, 0.6, 0.3])[None, :, None] * rng.uniform(0.9, 1.1, (n, AXES, 1))
    x = gain * (np.sin(2 * np.pi * f0 * t + phase) + 0.3 * np.sin(4 * np.pi * f0 * t + 2 * phase))
    x += 0.05 * rng.normal(size=x.shape)
    y = (rng.uniform(size=n) < faults).astype(np.int64)
    bad = np.flatnonzero(y)
    bearing = bad[: len(bad) // 2]
    x[bearing] += 0.4 * np.sin(2 * np.pi * 11 * t + rng.uniform(0, 2 * np.pi, (len(bearing), AXES, 1)))
    x[bearing, :, rng.integers(0, WINDOW, len(bearing))] += 1.5  # impacts
    imbalance = bad[len(bad) // 2 :]
    x[imbalance, rng.integers(0, AXES, len(imbalance))] *= 2.0
    return x.reshape(n, AXES * WINDOW).astype(np.float32), y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "recipes" / "data")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x, y = windows()
    np.savez_compressed(args.out / "sensor-anomaly.npz", x=x, y=y)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from toolchain.models.compat import keras

    k = keras()
    k.utils.set_random_seed(0)
    L = k.layers
    model = k.Sequential(
        [
            k.Input((AXES * WINDOW,), name="x"),
            L.Dense(32, activation="relu"),
            L.Dense(8, activation="relu"),
            L.Dense(32, activation="relu"),
            L.Dense(AXES * WINDOW),
        ],
        name="sensor_autoencoder",
    )
    model.save(args.out / "sensor-autoencoder.h5")
    print(f"{args.out}/sensor-anomaly.npz: {len(x)} windows, {int(y.sum())} faults; {args.out}/sensor-autoencoder.h5")


if __name__ == "__main__":
    main()
