"""ONNX-specific rewrites. Importing this package registers them."""

from . import group_norm_to_layer_norm  # noqa: F401 - imported to register
