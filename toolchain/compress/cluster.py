"""Weight clustering with tensorflow-model-optimization: each kernel's weights share ``clusters`` centroid values,
fine-tuned (the centroids train), then stripped back to plain layers. The artifact compresses better (gzip finds
the repeated values); the interpreter still runs every multiply. tfmot 0.8.1 clusters Conv2D and Dense kernels;
it registers DepthwiseConv2D with no clusterable weights, so depthwise kernels keep their values (reported)."""

from __future__ import annotations

import numpy as np

from toolchain.compress.common import clone, finetune, kernels, reestimate_batchnorm
from toolchain.compress.qat import tfmot
from toolchain.config.recipe import ClusterStep
from toolchain.errors import CompressionError


def unique_values(model) -> dict[str, int]:
    """Distinct values in each Conv2D, DepthwiseConv2D and Dense kernel."""
    return {name: int(np.unique(w).size) for name, w in kernels(model).items()}


def run(model, step: ClusterStep, data, teacher_train, scope) -> tuple[object, dict]:
    if step.epochs < 1:
        raise CompressionError("cluster: needs at least one fine-tune epoch (the centroids are trained)")
    cl = tfmot().clustering.keras
    init = getattr(cl.CentroidInitialization, step.init.upper())
    before = unique_values(model)
    with scope.scope():
        try:
            clustered = cl.cluster_weights(clone(model), number_of_clusters=step.clusters, cluster_centroids_init=init)
        except (ValueError, RuntimeError) as exc:
            raise CompressionError(f"cluster: {str(exc).splitlines()[0]}") from None
    history = finetune(clustered, step, data.x_train, data.y_train, teacher_train, scope, "cluster")
    stripped = cl.strip_clustering(clustered)
    reestimate_batchnorm(stripped, data.x_train)
    after = unique_values(stripped)
    clustered_layers = sorted(name for name, n in after.items() if n <= step.clusters < before.get(name, 0))
    return stripped, {
        "unique_values": after,
        "unique_values_before": before,
        "clustered_layers": clustered_layers,
        "left_alone": sorted(name for name, n in after.items() if n > step.clusters),
        "max_unique_values": max((after[n] for n in clustered_layers), default=0),
        "history": history,
    }
