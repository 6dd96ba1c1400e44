"""Refuse a model whose weights or reference outputs are not finite, before anything is written.

NaN/Inf weights (a diverged fine-tune, a broken conversion) or finite weights that still give NaN
(e.g. a negative BatchNorm running_var) make every artifact garbage and parity meaningless: the user
gets one line naming the first tensor or module at fault instead of a folder of artifacts that "fail".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import bundled_photos
from ..errors import CheckpointError
from .preprocess import Preprocessor, load_image


def check_finite_weights(state: dict[str, torch.Tensor], origin: str) -> None:
    """The first floating-point tensor holding NaN or Inf, named in a CheckpointError."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
            raise CheckpointError(
                f"{origin}: tensor {name} holds {kind} ({bad} of {tensor.numel()} values are not finite)"
            )


def check_finite_forward(model: nn.Module, image_size: int, origin: str) -> None:
    """One bundled photo through the reference; a non-finite output names the first module producing it."""
    check_finite_weights(dict(model.state_dict()), origin)
    photo = load_image(bundled_photos()[0])
    x = torch.from_numpy(Preprocessor.for_image_size(image_size)(photo)[None])
    first: list[str] = []

    def hook(name: str):
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            outs = output if isinstance(output, (tuple, list)) else (output,)
            if not first and any(
                isinstance(o, torch.Tensor) and o.is_floating_point() and not bool(torch.isfinite(o).all())
                for o in outs
            ):
                first.append(name)

        return record

    # Leaves only: their hooks fire in execution order, so the first one recorded is where NaN starts.
    handles = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n and not list(m.children())
    ]
    try:
        with torch.no_grad():
            outputs = model(x)
    finally:
        for h in handles:
            h.remove()
    outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    for name, out in zip(model.output_names, outs, strict=False):
        if not np.isfinite(out.numpy()).all():
            where = f" (first at module {first[0]})" if first else ""
            raise CheckpointError(
                f"{origin}: the reference model's output {name} is NaN/Inf on a real photo at "
                f"{image_size} px{where}; the weights are finite, so check e.g. BatchNorm running_var >= 0"
            )
