"""Steps over a float Keras model, in the recipe's order (``steps.run``), each reporting what it did.

- ``train``: fitting from the recipe (seeded; NaN stops it), also the float model's own training;
- ``qat``: quantization-aware training (tfmot; the converter then quantizes with the learnt ranges);
- ``prune``: magnitude pruning to a sparsity (tfmot, stripped); ``filters``: L1 filter pruning (channels removed);
- ``lowrank``: truncated SVD / spatial SVD / Tucker factorization of dense and conv layers;
- ``cluster``: weight clustering (tfmot, stripped);
- ``common``: fine-tuning with response and feature distillation from a teacher, MACs and parameter counts,
  the distribution strategy.
"""
