"""Loading Hugging Face-format MobileViTV2 checkpoints into the reference model.

Safety: weights come from `model.safetensors` first; `pytorch_model.bin` is read only with
`torch.load(weights_only=True)`, which refuses any pickle that would build arbitrary objects.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, first_line
from .config import TASK_ARCHITECTURES, TASKS, MobileViTV2Config
from .finite import check_finite_weights
from .heads import build_model
from .random_init import randomize_weights

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREFIX = "mobilevitv2."
DEFAULT_SEED = 0


@dataclass
class CheckpointInfo:
    """Where a model came from, as recorded in manifests and artifact metadata."""

    source: str  # a directory, a hub id, or "embedded-default"
    weights_file: str | None
    sha256: str | None
    untrained: bool

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def default_config(task: str = "classification") -> MobileViTV2Config:
    """The embedded default: width 1.0, 256x256, 1000 classes (segmentation: 21 classes at 512, stride 16)."""
    if task == "segmentation":
        labels = {i: f"class_{i}" for i in range(21)}
        return MobileViTV2Config(
            image_size=512, output_stride=16, id2label=labels, architectures=[TASK_ARCHITECTURES[task]]
        )
    labels = {i: f"class_{i}" for i in range(1000)}
    return MobileViTV2Config(image_size=256, id2label=labels, architectures=[TASK_ARCHITECTURES[task]])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 of a model's weights serialised as safetensors: provenance for models that have no file."""
    from safetensors.torch import save

    return hashlib.sha256(save({k: v.contiguous() for k, v in model.state_dict().items()})).hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a weights-only torch pickle; never executes checkpoint code."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({first_line(exc, 200)})"
            ) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors "
            "(weights_only=True); convert it to model.safetensors"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch weights file ({first_line(exc, 200)})"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return state


def adapt_keys(state: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """Map a checkpoint of one head onto another: a backbone takes the `mobilevitv2.` part of a head's weights,
    and a head takes a bare backbone's weights under `mobilevitv2.` (its own head then has to be present)."""
    prefixed = any(k.startswith(PREFIX) for k in state)
    if task == "backbone" and prefixed:
        return {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load with strict key and shape matching; a one-line error names what is missing, extra or mis-shaped."""
    expected = model.state_dict()
    # BatchNorm's num_batches_tracked does not affect inference; converted checkpoints often omit it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in expected]
    shaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensors (e.g. {', '.join(extra[:3])})")
    if shaped:
        problems.append(f"{len(shaped)} mis-shaped tensors (e.g. {'; '.join(shaped[:2])})")
    if problems:
        raise CheckpointError(f"{origin}: weights do not match the config: " + "; ".join(problems))
    check_finite_weights(state, origin)
    model.load_state_dict(state, strict=False)


def resolve_checkpoint_dir(path_or_hub_id: str) -> tuple[Path, str]:
    """A local directory, or a hub id fetched with huggingface_hub when it is installed and the network answers."""
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        if path.is_file():
            path = path.parent  # config.json or a weights file was named: use its folder
        return path, str(path)
    looks_like_hub_id = path_or_hub_id.count("/") == 1 and not path_or_hub_id.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise CheckpointError(f"{path_or_hub_id}: no such file or directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise CheckpointError(
            f"{path_or_hub_id}: not a local directory, and huggingface_hub is not installed; "
            f"download it first (e.g. `huggingface-cli download {path_or_hub_id} --local-dir DIR`) and pass DIR"
        ) from exc
    try:
        local = snapshot_download(path_or_hub_id, allow_patterns=["*.json", "*.safetensors", "*.bin"])
    except Exception as exc:  # network errors come in many types; all mean the same to the user
        raise CheckpointError(
            f"{path_or_hub_id}: could not download from the Hugging Face hub ({first_line(exc, 200)}); "
            f"download it on a machine with network access and pass the local directory"
        ) from exc
    return Path(local), path_or_hub_id


def load_model(
    path_or_hub_id: str | Path | None = None, task: str | None = None, *, seed: int = DEFAULT_SEED
) -> nn.Module:
    """An eval-mode reference model. With no checkpoint, the embedded untrained default (fixed seed).

    The module gets `.config` (MobileViTV2Config), `.task` and `.checkpoint` (CheckpointInfo).
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if path_or_hub_id is None:
        task = task or "classification"
        model = build_model(default_config(task), task)
        randomize_weights(model, seed)
        model.checkpoint = CheckpointInfo("embedded-default", None, state_dict_sha256(model), untrained=True)
        return model

    folder, source = resolve_checkpoint_dir(str(path_or_hub_id))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: no config.json (expected a Hugging Face-format checkpoint folder)")
    config = MobileViTV2Config.from_json_file(config_path)
    task = task or config.task or "classification"
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
    state = adapt_keys(read_state_dict(weights), task)
    model = build_model(config, task)
    head = [k for k in model.state_dict() if not k.startswith(PREFIX)] if task != "backbone" else []
    if head and not any(k in state for k in head):  # e.g. --task segmentation on a backbone checkpoint
        kind = config.task or "backbone"
        raise CheckpointError(
            f"{weights}: the checkpoint has no {task} head (it holds a {kind}); use --task {kind}"
            + (" or backbone" if kind != "backbone" else "")
        )
    load_state_dict_strict(model, state, str(weights))
    model.checkpoint = CheckpointInfo(source, weights.name, sha256_file(weights), untrained=False)
    return model.eval()
