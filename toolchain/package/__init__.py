"""Firmware sources, release bundles, manifests and their verification."""
