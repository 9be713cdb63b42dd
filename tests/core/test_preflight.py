"""The preflight: estimate, compare with the machine, turn on savings or refuse."""

import pytest

from napari_peft_sam.core import budget
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.errors import UserError
from napari_peft_sam.core.methods import make_config


def vit_b(**train):
    return RunConfig(
        DataSpec(dataset="nuclei"),
        ModelSpec("vit_b"),
        make_config("lora", {"rank": 32}),
        TrainConfig(**{"precision": "float32", **train}),
    )


def free(monkeypatch, gb):
    monkeypatch.setattr(budget, "available_mb", lambda device: gb * 1024)


def test_plenty_of_memory_changes_nothing(monkeypatch):
    """On a GPU, and on a CPU where chunks would save little (vit_b at 512 px)."""
    free(monkeypatch, 64)
    plan = budget.preflight(vit_b(), "cuda", amp=None)
    assert plan.changes == {"memory_saving": "off"} and plan.message is None
    config = vit_b()
    config.model.image_size = 512
    plan = budget.preflight(config, "cpu", amp=None)
    assert plan.changes == {"memory_saving": "off"} and plan.message is None


@pytest.mark.parametrize(("gb", "level"), [(10, "chunks"), (4, "checkpoint")])
def test_the_cheapest_saving_that_fits_is_turned_on(monkeypatch, gb, level):
    """vit_b at 1024 px, 25 objects: 16 GB laptops get chunks; 4 GB free, all."""
    free(monkeypatch, gb)
    plan = budget.preflight(vit_b(), "cpu", amp=None)
    assert plan.changes == {"memory_saving": level}
    assert plan.estimate_mb <= 0.9 * gb * 1024
    assert plan.message.startswith("Memory: about ")
    assert f"memory saving '{level}'" in plan.message
    assert "\n" not in plan.message


def test_too_little_memory_is_refused_naming_the_setting(monkeypatch):
    free(monkeypatch, 2)
    with pytest.raises(UserError) as error:
        budget.preflight(vit_b(), "cpu", amp=None)
    sentence = str(error.value)
    assert sentence.startswith("Training vit_b at 1024 px with 25 objects needs about")
    # named as the GUI's form labels it, and as the CLI's flag
    assert "set n objects to" in sentence or "set image size to" in sentence
    assert "--n-objects" in sentence or "--image-size" in sentence
    assert sentence.endswith(".") and "\n" not in sentence


def test_a_forced_level_that_does_not_fit_points_to_auto(monkeypatch):
    free(monkeypatch, 8)
    with pytest.raises(UserError, match="--memory-saving auto"):
        budget.preflight(vit_b(memory_saving="off"), "cpu", amp=None)
    plan = budget.preflight(vit_b(memory_saving="chunks"), "cpu", amp=None)
    assert plan.changes == {}  # the user's choice stands


def test_estimates_shrink_with_each_level_and_grow_with_objects():
    from napari_peft_sam.core.models import ARCHITECTURES

    arch, method = ARCHITECTURES["vit_b"], make_config("lora", {"rank": 32})
    peaks = [
        budget.estimate_peak_mb(arch, method, TrainConfig(), "cpu", False, level)
        for level in budget.LEVELS
    ]
    assert peaks == sorted(peaks, reverse=True)
    few = budget.estimate_peak_mb(arch, method, TrainConfig(n_objects=5), "cpu")
    assert few < peaks[0]
    # a GPU holds no process and attends in one call: no per-chunk key copies
    gpu = budget.estimate_peak_mb(arch, method, TrainConfig(), "cuda")
    assert gpu < peaks[0] - budget.CPU_BASE_MB


def test_the_cli_exits_2_with_the_sentence(tmp_path, monkeypatch, capsys):
    """A setting whose estimate exceeds the machine: exit 2, before any weights load."""
    from napari_peft_sam.cli import main

    free(monkeypatch, 2)
    weights = tmp_path / "never_read.pth"
    weights.write_bytes(b"not a checkpoint")
    code = main(
        [
            "train",
            "--dataset",
            "nuclei",
            "--model",
            "vit_b",
            "--checkpoint",
            str(weights),
            "--method",
            "lora",
            "--precision",
            "float32",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "needs about" in err and ("--n-objects" in err or "--image-size" in err)


def test_the_cli_says_which_memory_saving_it_turned_on(tmp_path, monkeypatch, capsys):
    """A saving chosen by auto is printed before the first step, on its own line."""
    from napari_peft_sam.cli import main
    from napari_peft_sam.core.config import TrainConfig
    from napari_peft_sam.core.models import ARCHITECTURES

    off, chunks = (
        budget.estimate_peak_mb(
            ARCHITECTURES["tiny"], make_config("lora"), TrainConfig(), "cpu", False, x
        )
        for x in ("off", "chunks")
    )
    # half the free memory lies between the two: chunks fit, off does not
    free_mb = (off + chunks) / 2 / budget.COMFORT
    monkeypatch.setattr(budget, "available_mb", lambda device: free_mb)
    args = ["train", "--dataset", "nuclei", "--model", "tiny", "--method", "lora"]
    args += ["--iterations", "1", "--val-patches", "1", "--precision", "float32"]
    args += ["--n-objects", "25", "--n-sub-iterations", "2"]
    code = main([*args, "--device", "cpu", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(x for x in out.splitlines() if x.startswith("Memory: about "))
    assert "turned on memory saving 'chunks'" in line and "GB free" in line
    assert out.index(line) < out.index("1/1 loss")
