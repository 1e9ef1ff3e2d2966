"""Steps over a float Keras model: training now; QAT, pruning and distillation plug in here."""
