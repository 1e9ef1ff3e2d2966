"""The search space, its Optuna distributions, the study database and the Pareto logic: no TensorFlow."""
