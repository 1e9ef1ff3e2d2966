"""One backend per emulated runtime, each imported lazily."""
