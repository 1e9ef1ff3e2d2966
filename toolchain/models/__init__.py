"""Model sources: Keras applications built from scratch, .keras/.h5 files, SavedModel directories."""
