"""Ordered rewrite pipelines per backend. Order matters where commented; everything runs top to bottom."""

from __future__ import annotations

# Shared prefix for every backend.
_CLEANUP: list[str] = [
    # First: dropouts/identities sit between ops later rewrites match on (softmax -> dropout -> mul).
    "common::remove_identity_ops",
    # Before anything that could insert a node between a conv and its BatchNorm.
    "common::fold_conv_batch_norm",
    # After the BN fold (which needs conv -> BN adjacency, not the kernel): ASPP's dilated 3x3 convs on a
    # map smaller than their dilation become the 1x1 convs they equal.
    "common::drop_padding_taps",
]

PIPELINES: dict[str, list[str]] = {
    "onnx": [
        *_CLEANUP,
        # Patching as a one-hot depthwise conv (stride r): ONNX's SpaceToDepth orders channels
        # differently, so pixel_unshuffle becomes Reshape + a rank-6 Transpose + Reshape, the slowest
        # layout op in onnxruntime. Measured at width 1.0 / 256, interleaved in one process: the conv form
        # runs 2-4% faster end to end (1 and 2 threads) and leaves the graph with no Transpose.
        "common::unfold_to_depthwise_conv",
        "common::fold_to_pixel_shuffle",
        "common::remove_broadcast_expand",
        # onnxruntime has a fused LayerNormalization kernel; a 1-group GroupNorm is a LayerNorm over
        # (C, P, N) plus a per-channel affine. Measured on [1, 256, 4, 256], 1 thread: LayerNormalization
        # 0.69 ms vs the element-wise form 1.17 ms.
        "onnx::group_norm_to_layer_norm",
        # The per-channel affine left after each LayerNorm into the 1x1 projection it feeds (18 of 21).
        "common::fold_channel_affine_into_conv",
    ],
    "coreml": [
        *_CLEANUP,
        # ml-cvnets' patching: a one-hot depthwise conv. pixel_unshuffle is decomposed by torch.export
        # into rank-6 reshape + permute (6 transposes in the MIL program, rank over the ANE's 5), and
        # coreml::unfold_to_reshape_transpose keeps transposes too; the conv has none.
        "common::unfold_to_depthwise_conv",
        "common::fold_to_pixel_shuffle",
        "common::remove_broadcast_expand",
        "common::decompose_group_norm",
        "common::fold_channel_affine_into_conv",
    ],
    "tflite": [
        *_CLEANUP,
        "common::unfold_to_pixel_unshuffle",
        "common::fold_to_pixel_shuffle",
        "common::remove_broadcast_expand",
        # The layout rewrite matches the element-wise norm, so decompose first.
        "common::decompose_group_norm",
        # Each norm's gamma/beta into the 1x1 projection it feeds: two activation passes fewer per norm.
        "common::fold_channel_affine_into_conv",
        # Last: it matches the pixel_(un)shuffle forms produced above and moves the whole
        # transformer stage between them to a (B, P, N, C) layout.
        "tflite::patches_to_channels_last",
        # After it: the stage's norm means are over 6-D grids and must not match the (H, W) pool.
        "tflite::pool_channels_last",
    ],
}
