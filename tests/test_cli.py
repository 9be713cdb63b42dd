"""The command-line contract: methods, --help, exit codes, headless imports."""

import json
import subprocess
import sys

import pytest

from napari_peft_sam.cli import COMMANDS, main
from napari_peft_sam.core.methods import available_methods


def test_methods_json_lists_every_method_with_knobs(capsys):
    assert main(["methods", "--json"]) == 0
    described = {m["method"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(described) == set(available_methods())
    lora = {h["name"]: h for h in described["lora"]["hyperparameters"]}
    assert lora["scaling"]["choices"] == ["alpha", "alpha/rank", "alpha/sqrt(rank)"]
    assert lora["rank"]["default"] == 32 and lora["rank"]["range"].startswith(">= 1")
    assert {h["name"] for h in described["adaptformer"]["hyperparameters"]} >= {
        "alpha",
        "projection_size",
        "dropout",
    }
    assert described["adaptformer"]["mergeable"] is False


def test_help_documents_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "napari_peft_sam.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_prints_its_help(command, capsys):
    # argparse %-formats help text: a literal "5 %" in a setting's help crashed
    # `train --help` with a ValueError instead of printing it
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: napari-peft-sam " + command in capsys.readouterr().out


def test_user_error_exits_2_with_one_line_on_stderr(tmp_path, capsys):
    code = main(
        ["export", "--run", str(tmp_path), "--format", "merged", "--out", "x.pt"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no card.json" in err


def test_export_cli_writes_a_merged_file(tmp_path, capsys):
    from napari_peft_sam.core.checkpoints import save_run
    from napari_peft_sam.core.methods import apply_method, make_config
    from napari_peft_sam.core.models import load_base_model

    sam, info = load_base_model("tiny")
    cfg = make_config("lora", {"rank": 2})
    save_run(tmp_path / "run", apply_method(sam, cfg), info, cfg)
    out = tmp_path / "merged.pt"
    assert (
        main(
            [
                "export",
                "--run",
                str(tmp_path / "run"),
                "--format",
                "merged",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        out.is_file() and "napari-peft-sam train --model tiny --checkpoint" in printed
    )


@pytest.mark.parametrize("module", ["napari_peft_sam.core", "napari_peft_sam.cli"])
def test_core_and_cli_are_headless(module):
    code = (
        f"import sys, {module}\n"
        "import napari_peft_sam.core.methods, napari_peft_sam.core.models\n"
        "import napari_peft_sam.core.checkpoints\n"
        "from napari_peft_sam.cli import main\n"
        "main(['methods', '--json'])\n"
        "gui = {'napari', 'qtpy', 'magicgui', 'superqt', 'psygnal', 'PyQt6', 'PyQt5'}\n"
        "loaded = gui & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
