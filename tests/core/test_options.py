"""One table of data, model and SLURM options (``core.options``): the CLI, the
run card's command, the sweep spec and the SLURM submission agree with it."""

import dataclasses
import shlex

import pytest

from napari_peft_sam.cli import build_parser
from napari_peft_sam.core import executors, options
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig
from napari_peft_sam.core.methods import make_config
from napari_peft_sam.core.sweep import SweepSpec


def _flags(parser, command):
    sub = next(
        a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
    )
    return {
        flag: action
        for action in sub.choices[command]._actions
        for flag in action.option_strings
    }


def test_every_spec_field_is_one_row_and_one_flag_of_each_command():
    data = {f.name for f in dataclasses.fields(DataSpec)} - set(options.DATA_NOT_FLAGS)
    assert [o.field for o in options.DATA] == [
        f.name for f in dataclasses.fields(DataSpec) if f.name in data
    ]
    assert {o.field for o in options.MODEL} == {
        f.name for f in dataclasses.fields(ModelSpec)
    }
    parser = build_parser()
    for command, rows in (
        ("train", options.DATA + options.MODEL),
        ("evaluate", options.DATA + options.MODEL),
        ("data", options.DATA),
        ("sweep", options.SLURM),
    ):
        flags = _flags(parser, command)
        for option in rows:
            assert option.flag in flags, (command, option.flag)
            assert flags[option.flag].dest == option.dest
            assert flags[option.flag].help == option.help


FILES = DataSpec(
    images=["a dir/*.tif"],
    labels=["l/*.tif"],
    image_key="raw",
    label_key="seg",
    stack=True,
    val_fraction=0.3,
    split_seed=4,
)


@pytest.mark.parametrize("data", [FILES, DataSpec(dataset="nuclei")])
def test_a_run_cards_command_parses_back_to_its_data_and_model(data):
    config = RunConfig(
        data=data,
        model=ModelSpec("vit_b", checkpoint="/w/sam b.pt", image_size=512),
        method=make_config("lora", {}),
    )
    words = shlex.split(config.command("out"))
    assert words[:2] == ["napari-peft-sam", "train"]
    args = build_parser().parse_args(words[1:])
    from napari_peft_sam.commands.common import data_spec

    assert data_spec(args) == data
    assert ModelSpec(args.model, args.checkpoint, args.image_size) == config.model


def test_a_sweep_spec_takes_the_same_data_fields():
    values = {o.field: getattr(FILES, o.field) for o in options.DATA}
    spec = SweepSpec.from_dict(
        {
            "name": "s",
            "dataset": "files",
            "model": "tiny",
            "method": "lora",
            "grid": {"rank": [1]},
            "data": values,
        }
    )
    assert spec.run_config(spec.points()[0]).data == FILES


def test_the_slurm_flags_reach_submitit(monkeypatch):
    """Every SLURM row parsed from the CLI becomes its submitit parameter."""
    seen = {}

    class FakeExecutor:
        def __init__(self, folder, cluster):
            seen["cluster"] = cluster

        def update_parameters(self, **params):
            seen.update(params)

    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    nodes = executors.Nodes("gpu", cpus=32, mem_gb=256, gpus=4)
    monkeypatch.setattr(executors, "partition_nodes", lambda partition=None: nodes)
    words = ["sweep", "--preset", "lora_rank_alpha", "--storage", "s.journal"]
    given = {
        "partition": "gpu",
        "gpus": 2,
        "time": 30,
        "mem": 64,
        "cpus": 16,
        "setup": ["module load cuda", "source env"],
        "array_parallelism": 3,
    }
    assert set(given) == {o.field for o in options.SLURM}
    for option in options.SLURM:
        value = given[option.field]
        for item in value if isinstance(value, list) else [value]:
            words += [option.flag, str(item)]
    args = build_parser().parse_args(words)
    executors.EXECUTORS["slurm"].build("folder", vars(args))
    assert seen["cluster"] == "slurm"
    for option in options.SLURM:
        assert seen[option.submitit] == given[option.field], option.field
    # unset: the table's defaults and what fits the partition
    seen.clear()
    executors.EXECUTORS["slurm"].build("folder", {})
    assert seen["timeout_min"] == options.default("time") == 240
    assert seen["slurm_array_parallelism"] == options.default("array_parallelism")
    assert (seen["gpus_per_node"], seen["cpus_per_task"], seen["mem_gb"]) == (1, 8, 32)
    assert "slurm_partition" not in seen and "slurm_setup" not in seen
