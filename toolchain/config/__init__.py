"""Recipes and target profiles: pydantic models over YAML, with file:line errors. No TensorFlow here."""

from toolchain.config.loader import TARGETS_DIR, list_targets, load_recipe, load_target
from toolchain.config.recipe import Recipe
from toolchain.config.target import Target

__all__ = ["load_recipe", "load_target", "list_targets", "TARGETS_DIR", "Recipe", "Target"]
