"""Backend-neutral rewrites. Importing this package registers them."""

from . import (  # noqa: F401 - imported to register
    decompose_group_norm,
    drop_padding_taps,
    fold_channel_affine_into_conv,
    fold_conv_batch_norm,
    fold_to_pixel_shuffle,
    remove_broadcast_expand,
    remove_identity_ops,
    unfold_to_depthwise_conv,
    unfold_to_pixel_unshuffle,
)
