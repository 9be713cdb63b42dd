"""Recipes per base model, resolved the same way everywhere, and evaluation sets."""

from __future__ import annotations

import json

import tifffile

from napari_peft_sam.cli import main
from napari_peft_sam.core.config import TrainConfig
from napari_peft_sam.core.recipes import QUICK, STUDY, recipe_for, resolve
from napari_peft_sam.core.runfolder import read_card


def test_every_base_model_has_a_recipe_and_flags_win():
    assert recipe_for("vit_b_lm") is STUDY and recipe_for("vit_l") is STUDY
    assert recipe_for("demo") is QUICK
    config, sources = resolve({"lr": 0.002}, "demo")
    assert config.lr == 0.002 and sources["lr"] == "explicit"
    assert config.iterations == QUICK.settings["iterations"]
    assert sources["iterations"] == "recipe quick"
    assert sources["weight_decay"] == "default"
    assert config.weight_decay == TrainConfig().weight_decay


def test_train_without_settings_takes_the_demo_recipe_and_records_it(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "organoids", "--model", "demo", "--method", "lora",
            "--iterations", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    card = read_card(out)
    assert card["run_config"]["train"]["lr"] == QUICK.settings["lr"]
    assert card["run_config"]["train_sources"]["lr"] == "recipe quick"
    assert card["run_config"]["train_sources"]["iterations"] == "explicit"
    assert "--lr" not in card["command"] and "--iterations 2" in card["command"]


def test_evaluate_scores_every_image_of_another_set_and_the_held_out_of_its_own(
    tmp_path, capsys
):
    from napari_peft_sam.core.sources import sample_dataset

    run = tmp_path / "run"
    argv = ["train", "--dataset", "organoids", "--model", "tiny", "--method", "lora",
            "--iterations", "2", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    for k, sample in enumerate(list(sample_dataset("nuclei"))[:2]):
        for kind, array in (
            ("images", sample.image[..., 0]),
            ("labels", sample.labels),
        ):
            (tmp_path / kind).mkdir(exist_ok=True)
            tifffile.imwrite(tmp_path / kind / f"cell_{k}.tif", array)
    capsys.readouterr()
    base = ["evaluate", "--run", str(run), "--metrics", "single box", "--json"]
    other = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels")]
    assert main([*base, *other]) == 0
    assert "every image given: 2 images" in capsys.readouterr().err
    evaluation = read_card(run)["evaluations"][-1]
    assert evaluation["images"] == 2
    assert evaluation["image_names"] == ["cell_0.tif", "cell_1.tif"]
    assert main([*base, "--dataset", "organoids"]) == 0  # the run's own data
    assert "its 4 held-out image(s) (16 trained it)" in capsys.readouterr().err
    assert read_card(run)["evaluations"][-1]["images"] == 4


def test_the_gui_and_the_cli_resolve_the_same_settings(tmp_path):
    from napari_peft_sam.cli import build_parser
    from napari_peft_sam.commands.run import run_config

    explicit = {"lr": 0.0005, "iterations": 40, "n_objects": 4}  # what a form sends
    gui, gui_sources = resolve(explicit, "demo")
    args = build_parser().parse_args(
        [
            "train",
            "--dataset",
            "organoids",
            "--model",
            "demo",
            "--method",
            "lora",
            "--lr",
            "0.0005",
            "--iterations",
            "40",
            "--n-objects",
            "4",
            "--out",
            str(tmp_path / "x"),
        ]  # fmt: skip
    )
    cli = run_config(args)
    assert cli.train.to_dict() == gui.to_dict()
    assert cli.train_sources == gui_sources
    assert json.dumps(cli.train.to_dict(), sort_keys=True)  # JSON-ready for the card
