"""Rewrites only the ExecuTorch target runs: each turns an op XNNPACK's partitioner refuses into ops it
delegates, so the whole program becomes one delegate (no portable-kernel fallback between pieces).
Importing this package registers them (the exporter's `pipeline` names them by id)."""

from . import (  # noqa: F401 - imported to register
    channel_mean_as_pool,
    pool_keepdim,
    silu_as_sigmoid_mul,
    softmax_as_pool_ops,
    split_conv_outputs,
    sum_as_depthwise_conv,
)

# The exporter's rewrite pipeline: the Core ML one's NCHW forms (XNNPACK picks its own NHWC layout,
# so the TFLite pipeline's channels-last patches would only add permutes it must undo), then these.
PIPELINE: tuple[str, ...] = (
    "common::remove_identity_ops",
    "common::fold_conv_batch_norm",
    "common::drop_padding_taps",
    "common::unfold_to_depthwise_conv",
    "common::fold_to_pixel_shuffle",
    "common::remove_broadcast_expand",
    "common::decompose_group_norm",
    "common::fold_channel_affine_into_conv",
    # After decompose_group_norm: it matches the norm's means over (C, H, W).
    "executorch::channel_mean_as_pool",
    "executorch::sum_as_depthwise_conv",
    "executorch::softmax_as_pool_ops",
    "executorch::split_conv_outputs",
    "executorch::pool_keepdim",
    "executorch::silu_as_sigmoid_mul",
)
