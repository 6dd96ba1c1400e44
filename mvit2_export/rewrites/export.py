"""Export a module to an ATen ExportedProgram, and re-export an edited graph with the same dynamic batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.export import Dim, ExportedProgram


def _as_tuple(example_input: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)


def _dynamic_shapes(args: tuple[torch.Tensor, ...], dynamic_batch: bool) -> tuple[Any, ...] | None:
    if not dynamic_batch:
        return None
    batch = Dim("batch")  # one symbol shared by all inputs: they are batched together
    return tuple({0: batch} for _ in args)


def dynamic_batch_example(
    example_input: torch.Tensor | Sequence[torch.Tensor],
) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
    """(args, dynamic_shapes) for a trace with a symbolic batch: an example batch of 1 would be
    specialised by torch.export, so it is repeated to 2."""
    args = tuple(
        a.expand(2, *a.shape[1:]).clone() if a.shape[0] == 1 else a for a in _as_tuple(example_input)
    )
    return args, _dynamic_shapes(args, True)  # type: ignore[return-value]


def export_program(
    module: torch.nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    dynamic_batch: bool = False,
) -> ExportedProgram:
    """`torch.export.export(strict=False)` of an eval-mode module returning a Tensor or tuple of Tensors.

    With `dynamic_batch`, dim 0 of every input is the symbol `batch`. An example batch of 1 would
    be specialised by export, so a batch of 1 is repeated to 2 for tracing.
    """
    args, shapes = dynamic_batch_example(example_input) if dynamic_batch else (_as_tuple(example_input), None)
    module = module.eval()
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)


def has_dynamic_batch(ep: ExportedProgram) -> bool:
    """True when the first user input's dim 0 is symbolic."""
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            return isinstance(val, torch.Tensor) and val.dim() > 0 and not isinstance(val.shape[0], int)
    return False


def example_args(ep: ExportedProgram) -> tuple[torch.Tensor, ...]:
    """Example inputs for re-export: those stored on the program, else random tensors of the traced shapes."""
    stored = getattr(ep, "example_inputs", None)
    if stored is not None and stored[0]:
        return tuple(stored[0])
    args = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta["val"]
            sizes = [d if isinstance(d, int) else int(d.node.hint or 2) for d in val.shape]
            args.append(torch.randn(sizes, dtype=val.dtype))
    return tuple(args)


def reexport(
    gm: torch.fx.GraphModule, args: tuple[torch.Tensor, ...], dynamic_batch: bool
) -> ExportedProgram:
    """Re-trace an edited unlifted module: refreshes meta, shapes, the signature and lifted constants."""
    with torch.no_grad():
        return torch.export.export(
            gm, args, dynamic_shapes=_dynamic_shapes(args, dynamic_batch), strict=False
        )
