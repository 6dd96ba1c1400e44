"""The command line as a user meets it: exit codes, one-line errors, no tracebacks without --verbose."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mvit2_export.cli.main import main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The real console script entry in a fresh interpreter: what a user's shell sees."""
    return subprocess.run(
        [sys.executable, "-m", "mvit2_export.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """The same entry point in-process (fast); returns a CompletedProcess-like record."""
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_subcommands_and_the_export_command():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("--target", "--precision", "palettized", "w8a8", "info", "inspect", "check", "bench"):
        assert word in proc.stdout


def test_info_json_on_a_transformers_checkpoint(hf_checkpoint, capsys):
    folder, hf = hf_checkpoint("classification")
    assert main(["info", "--checkpoint", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == sum(p.numel() for p in hf.parameters())
    assert info["task"] == "classification" and info["untrained"] is False
    assert info["gmacs"] > 0 and len(info["weights_sha256"]) == 64


def test_info_of_the_embedded_default_says_untrained(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["untrained"] is True and info["width_multiplier"] == 1.0 and info["image_size"] == 256


def write_v1_config(folder):
    (folder / "config.json").write_text(
        json.dumps({"model_type": "mobilevit", "hidden_sizes": [144, 192, 240]})
    )


def bad_checkpoints(tmp_path, hf_folder):
    """Each: (name, folder, words the one-line error must contain)."""
    import shutil

    from safetensors.torch import load_file, save_file

    cases = []
    missing = tmp_path / "does-not-exist"
    cases.append(("missing path", missing, [str(missing)]))

    v1 = tmp_path / "v1"
    v1.mkdir()
    write_v1_config(v1)
    cases.append(("mobilevit v1", v1, ["model_type", "mobilevit"]))

    state = load_file(hf_folder / "model.safetensors")
    for name, mutate, words in [
        ("missing tensor", lambda s: s.pop("classifier.weight"), ["missing", "classifier.weight"]),
        ("extra tensor", lambda s: s.__setitem__("foo.bar", torch.zeros(1)), ["unexpected", "foo.bar"]),
        (
            "mis-shaped",
            lambda s: s.__setitem__("classifier.bias", torch.zeros(3)),
            ["mis-shaped", "classifier.bias"],
        ),
    ]:
        d = tmp_path / name.replace(" ", "-")
        d.mkdir()
        shutil.copy(hf_folder / "config.json", d / "config.json")
        s = dict(state)
        mutate(s)
        save_file(s, d / "model.safetensors")
        cases.append((name, d, ["model.safetensors", *words]))

    trunc = tmp_path / "truncated"
    trunc.mkdir()
    shutil.copy(hf_folder / "config.json", trunc / "config.json")
    data = (hf_folder / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases.append(("truncated safetensors", trunc, ["model.safetensors", "safetensors"]))
    return cases


def test_bad_checkpoints_give_one_line_errors(hf_checkpoint, tmp_path, capsys):
    folder, _ = hf_checkpoint("classification")
    for name, path, words in bad_checkpoints(tmp_path, folder):
        proc = run_main(capsys, "info", "--checkpoint", str(path))
        assert_one_line_error(proc, *words)
        assert proc.returncode == 2, name


class _Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_execute_code_is_refused_and_never_runs(hf_checkpoint, tmp_path):
    import pickle
    import shutil

    folder, _ = hf_checkpoint("classification")
    ckpt = tmp_path / "evil"
    ckpt.mkdir()
    shutil.copy(folder / "config.json", ckpt / "config.json")
    marker = tmp_path / "PWNED"
    with open(ckpt / "pytorch_model.bin", "wb") as f:
        pickle.dump({"classifier.weight": _Exploit(marker)}, f)
    torch_save_style = tmp_path / "evil2"
    torch_save_style.mkdir()
    shutil.copy(folder / "config.json", torch_save_style / "config.json")
    torch.save({"x": _Exploit(marker)}, torch_save_style / "pytorch_model.bin")
    for path in (ckpt, torch_save_style):
        proc = run_cli("info", "--checkpoint", str(path))
        assert_one_line_error(proc, "pytorch_model.bin")
        assert not marker.exists(), "the checkpoint's pickle executed code"


@pytest.mark.parametrize("size", ["100", "96", "0"])
def test_image_size_the_architecture_cannot_take(size, capsys):
    proc = run_main(capsys, "info", "--image-size", size)
    assert_one_line_error(proc, f"{size}x{size}")


def test_verbose_shows_the_traceback(tmp_path):
    proc = run_cli("info", "--checkpoint", str(tmp_path / "nope"), "--verbose")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--target", "foo"], "unknown target"),
        (["--target", "onnx", "--precision", "int4"], "unknown precision"),
        (["--target", "onnx", "--width", "1.0", "--checkpoint", "x/y"], "--width"),
        (["inspect", "model.xyz"], "unknown artifact type"),
        (["bench", "out", "--delegate", "gpu"], "--device android"),
        (["info", "--task", "detection"], "invalid choice"),
        (["chek", "out"], "unknown command 'chek'; did you mean 'check'?"),
        (["--target", "onnx", "--width", "3"], "--width 3 is outside 0.5..2"),
        (["check", "no/such/out"], "no such file or directory"),
    ],
)
def test_bad_arguments(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_main(capsys, *args), needle)


def test_hub_id_without_network_says_how_to_download(monkeypatch, capsys):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may need the network
    proc = run_main(capsys, "info", "--checkpoint", "apple/mobilevitv2-1.0-imagenet1k-256")
    assert_one_line_error(proc, "apple/mobilevitv2-1.0-imagenet1k-256", "download")


def test_missing_path_and_a_file_for_an_output_directory_are_usage_errors(tmp_path, capsys):
    assert run_main(capsys, "check", str(tmp_path / "nope")).returncode == 2  # not 6 (integrity)
    a_file = tmp_path / "model.onnx"
    a_file.write_bytes(b"x")
    proc = run_main(capsys, "bench", str(a_file))
    assert proc.returncode == 2
    assert_one_line_error(proc, "not a directory")
    assert "Errno" not in proc.stderr


def test_a_head_the_checkpoint_does_not_have_is_named(hf_checkpoint, capsys):
    folder, _ = hf_checkpoint("backbone")
    capsys.readouterr()  # save_pretrained's progress bar
    proc = run_main(capsys, "info", "--checkpoint", str(folder), "--task", "segmentation")
    assert proc.returncode == 2
    assert_one_line_error(proc, "no segmentation head", "--task backbone")
    assert "missing" not in proc.stderr  # not a list of 274 missing tensors


def _copy_with(tmp_path, hf_folder, name, mutate):
    import shutil

    from safetensors.torch import load_file, save_file

    d = tmp_path / name
    d.mkdir()
    shutil.copy(hf_folder / "config.json", d / "config.json")
    state = load_file(hf_folder / "model.safetensors")
    mutate(state)
    save_file(state, d / "model.safetensors")
    return d


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_weights_are_named_and_nothing_is_written(hf_checkpoint, tmp_path, capsys, value, kind):
    folder, _ = hf_checkpoint("classification")
    tensor = "mobilevitv2.encoder.layer.2.transformer.layer.0.attention.qkv_proj.convolution.weight"

    def poison(state):
        state[tensor] = state[tensor].clone()
        state[tensor].view(-1)[3] = value

    bad = _copy_with(tmp_path, folder, f"poisoned-{kind}", poison)
    capsys.readouterr()  # save_pretrained's progress bar
    out = tmp_path / "out"
    proc = run_main(capsys, "--target", "onnx", "--checkpoint", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert_one_line_error(proc, tensor, kind, "1 of")
    assert not out.exists()


def test_a_reference_forward_that_gives_nan_is_refused_before_anything_is_written(
    hf_checkpoint, tmp_path, capsys
):
    folder, _ = hf_checkpoint("classification")
    bn = "mobilevitv2.encoder.layer.1.layer.0.expand_1x1.normalization.running_var"

    def negative_variance(state):  # finite weights, but sqrt(var + eps) is NaN
        state[bn] = -state[bn].abs() - 1.0

    bad = _copy_with(tmp_path, folder, "negative-var", negative_variance)
    capsys.readouterr()
    out = tmp_path / "out"
    proc = run_main(capsys, "--target", "onnx", "--checkpoint", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert_one_line_error(proc, "NaN/Inf", "logits", "encoder.layer.1.layer.0.expand_1x1")
    assert not out.exists()


def test_every_option_of_every_command_has_help_and_lists_its_values():
    import argparse

    from mvit2_export.cli.main import SUBCOMMANDS, build_export_parser, build_sub_parser
    from mvit2_export.exporters import known_precisions, target_names
    from mvit2_export.exporters.coreml.settings import PALETTIZE_BITS
    from mvit2_export.exporters.onnx.exporter import OPSETS as SUPPORTED_OPSETS

    parsers = {"export": build_export_parser(), **{n: build_sub_parser(n) for n in SUBCOMMANDS}}
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    export_help = " ".join(parsers["export"].format_help().split())
    for value in (*known_precisions(), *target_names(), "all"):
        assert value in export_help, value
    assert ", ".join(map(str, PALETTIZE_BITS)) in export_help
    assert f"{SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}" in export_help
