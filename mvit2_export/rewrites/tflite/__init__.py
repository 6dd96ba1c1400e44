"""TFLite-specific rewrites. Importing this package registers them."""

from . import patches_to_channels_last, pool_channels_last  # noqa: F401 - imported to register
