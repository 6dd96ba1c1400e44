"""Core ML-specific rewrites. Importing this package registers them."""

from . import unfold_to_reshape_transpose  # noqa: F401 - imported to register
