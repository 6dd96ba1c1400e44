"""`check --localize` on .pte artifacts: the program re-lowered with ExecuTorch's intermediate-output taps.

One export (width 0.5, 64 px, camera input embedded) and a second .pte lowered from the same model with
one mid-network conv's weights perturbed, listed in the same manifest with its sha256: one `check
--localize` (~2 min on two cores) checks both. The clean one has every op compared by name, within the
fp32 per-op tolerance; the other fails parity, and localization refuses to speak for it, because the
tapped program (lowered from the model) does not reproduce the file.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

pytest.importorskip("executorch")

from mvit2_export.api import export, resolve_model  # noqa: E402
from mvit2_export.cli.main import main  # noqa: E402
from mvit2_export.errors import IntegrityError  # noqa: E402
from mvit2_export.exporters.base import ExportOptions  # noqa: E402
from mvit2_export.exporters.executorch import ExecuTorchExporter  # noqa: E402
from mvit2_export.manifest import sha256_path, write_manifest  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def out_with_foreign_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("pte-localize") / "out"
    manifest = export(
        None, "executorch", out, "fp32", width=0.5, image_size=SIZE, embed_preprocessing=True, check=False
    )
    entry = manifest.artifacts[0]
    other = copy.deepcopy(resolve_model(None, "classification", 0.5))
    convs = [m for m in other.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        w = convs[len(convs) // 2].weight
        w.add_(torch.randn_like(w, generator=torch.Generator().manual_seed(0)) * w.std())
    foreign = dataclasses.replace(entry, path="foreign.pte")
    options = ExportOptions(precision="fp32", image_size=SIZE, embed_preprocessing=True)
    ExecuTorchExporter().export(other, options, out / foreign.path)
    foreign.sha256 = sha256_path(out / foreign.path)
    manifest.artifacts.append(foreign)
    write_manifest(out, manifest)
    return out


def test_localize_compares_every_op_of_the_delegate_and_refuses_a_file_it_cannot_reproduce(
    out_with_foreign_copy, capsys
):
    # the foreign file's sha256 is in the manifest, yet it is not what this model lowers to
    assert main(["check", str(out_with_foreign_copy), "--localize", "--json"]) == IntegrityError.exit_code
    clean, foreign = json.loads(capsys.readouterr().out)

    assert clean["passed"], clean["detail"]
    loc = clean["localization"]
    # every float op from the first conv on, matched by the reference program's node names
    assert loc["compared"] >= 400 and loc["first_divergent"] is None and loc["tolerance"] == 1e-4
    assert max(op["rel_err"] for op in loc["ops"]) <= 1e-4
    names = [op["name"] for op in loc["ops"]]
    assert names[0].startswith("conv2d") and any(n.startswith("sigmoid") for n in names)
    assert f"passed: {loc['compared']} intermediates compared" in clean["detail"]

    assert not foreign["passed"] and foreign["localization"] is None
    assert "does not reproduce the artifact's outputs" in foreign["detail"], foreign["detail"]


@pytest.mark.parametrize(
    ("change", "names"),
    [({"precision": "int8"}, "int8"), ({"options": {"delegate_backend": "coreml"}}, "Core ML")],
)
def test_localize_refuses_pte_whose_taps_would_observe_another_program(out_with_foreign_copy, change, names):
    from mvit2_export.errors import UsageError
    from mvit2_export.manifest import read_manifest

    entry = dataclasses.replace(read_manifest(out_with_foreign_copy).artifacts[0], **change)
    with pytest.raises(UsageError, match=names):
        ExecuTorchExporter().lowered(resolve_model(None, "classification", 0.5), entry, SIZE)
