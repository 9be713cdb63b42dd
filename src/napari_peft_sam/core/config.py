"""RunConfig = data + model + method + train; validated, with a JSON/YAML round trip.

The CLI, the GUI and sweeps all build a RunConfig and hand it to
``core.training``; the run card stores it, so a run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .knobs import Knob, describe_knob, flag, hp, knobs_of, validate
from .methods import MethodConfig, config_from_dict, make_config


@dataclass
class DataSpec:
    """Where the images come from (a named dataset, or files)."""

    dataset: str | None = None
    images: list[str] | None = None
    labels: list[str] | None = None
    image_key: str | None = None
    label_key: str | None = None
    stack: bool = False
    val_fraction: float = 0.2
    split_seed: int = 0
    annotation: str | None = None  # the annotation set and version, if from one

    def __post_init__(self) -> None:
        seed, fraction = self.split_seed, self.val_fraction
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(
                f"The split seed must be a whole number from 0 to 2**32 - 1, got {seed!r}."
            )
        if isinstance(fraction, bool) or not (
            isinstance(fraction, (int, float)) and 0 < fraction < 1
        ):
            raise ConfigError(
                f"The validation fraction must be between 0 and 1, got {fraction!r}."
            )

    def describe(self) -> str:
        return self.dataset or f"{self.images} + {self.labels}"


@dataclass
class ModelSpec:
    """The base model: a name, optional custom weights, optional input size."""

    name: str = "tiny"
    checkpoint: str | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        size = self.image_size
        if size is not None and (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 64 <= size <= 4096
            or size % 16
        ):
            raise ConfigError(
                f"The model's image size must be a multiple of 16 from 64 to 4096 "
                f"pixels, got {size!r}."
            )


def _setting(default, help, kind, **knob):
    return hp(default, help, kind, **knob)


@dataclass
class TrainConfig:
    """Training settings, each described once (kind, range, help).

    The CLI's flags, the Train widget's form, the sweep grid and the run card
    are generated from these fields. Defaults follow micro-sam and the
    PEFT-SAM study; a base model's recipe (``core.recipes``) may replace them.
    """

    lr: float = _setting(
        1e-5,
        "Learning rate of AdamW.",
        "float",
        low=0,
        low_open=True,
        high=1,
        high_open=True,
    )
    iterations: int = _setting(1000, "Training steps.", "int", low=1)
    batch_size: int = _setting(
        1, "Images per step.", "int", low=1, high=64, advanced=True
    )
    n_objects: int = _setting(
        25,
        "Objects sampled per image and step (the main memory knob).",
        "int",
        low=1,
        high=1000,
    )
    n_sub_iterations: int = _setting(
        8,
        "Decoder passes per step: the first prompt, then corrective points.",
        "int",
        low=1,
        high=64,
        flags=("--sub-iterations",),
    )
    mask_prob: float = _setting(
        0.5,
        "Probability of feeding the previous mask back as a prompt.",
        "float",
        low=0,
        high=1,
        advanced=True,
    )
    patch_size: int | None = _setting(
        None,
        "Training patch in pixels, resized to the model's input (none: the input size).",
        "int",
        low=16,
        high=4096,
        optional=True,
    )
    min_objects: int = _setting(
        1, "Objects a training patch must hold.", "int", low=1, advanced=True
    )
    val_interval: int = _setting(100, "Validate every this many steps.", "int", low=1)
    val_patches: int = _setting(
        8, "Fixed validation patches.", "int", low=1, high=1000, advanced=True
    )
    early_stopping: int | None = _setting(
        None,
        "Stop after this many validation rounds without improvement (none: never).",
        "int",
        low=1,
        optional=True,
        advanced=True,
    )
    scheduler: str = _setting(
        "plateau",
        "Learning-rate schedule: plateau (the study's ReduceLROnPlateau), cosine or none.",
        "choice",
        choices=("plateau", "cosine", "none"),
    )
    plateau_patience: int = _setting(
        10,
        "Validation rounds before plateau lowers the rate.",
        "int",
        low=1,
        advanced=True,
    )
    plateau_factor: float = _setting(
        0.9,
        "Factor plateau multiplies the rate by.",
        "float",
        low=0,
        low_open=True,
        high=1,
        advanced=True,
    )
    warmup: int = _setting(
        0, "Steps of linear learning-rate warm-up.", "int", low=0, advanced=True
    )
    weight_decay: float = _setting(
        0.01, "AdamW weight decay.", "float", low=0, high=10, advanced=True
    )
    seed: int = _setting(
        0,
        "Seed of data order, prompts and initialisation.",
        "int",
        low=0,
        high=2**31 - 1,
    )
    device: str = _setting(
        "auto",
        "auto, cpu, cuda or cuda:N.",
        "text",
        pattern=r"auto|cpu|cuda(:\d+)?",
        choices=("auto", "cpu", "cuda", "cuda:N"),
    )
    precision: str = _setting(
        "auto",
        "auto picks per machine; float32 or bfloat16 force one.",
        "choice",
        choices=("auto", "float32", "bfloat16"),
        advanced=True,
    )
    grad_checkpointing: bool = _setting(
        False,
        "Recompute encoder activations in backward (less memory, slower).",
        "bool",
        advanced=True,
    )
    with_decoder: bool = _setting(
        False,
        "Also train micro-sam's AIS decoder (the ais metric; about 7x slower steps).",
        "bool",
    )
    fast_path: bool = _setting(
        True,
        "Fused attention and sync-free prompts (core/fastpath.py).",
        "bool",
        advanced=True,
    )
    compile: bool = _setting(
        False, "torch.compile the image encoder.", "bool", advanced=True
    )
    box_distortion: float = _setting(
        0.025,
        "Random shift of box edges, as a share of the box size.",
        "float",
        low=0,
        high=0.5,
        advanced=True,
    )
    checkpoint_interval: int = _setting(
        50, "Save a checkpoint every this many steps.", "int", low=1, advanced=True
    )
    memory_saving: str = _setting(
        "auto",
        "auto: the preflight turns on what the run needs to fit in memory; off; "
        "chunks (encoder attention in query chunks recomputed in backward, objects "
        "decoded 8 at a time); checkpoint (chunks, and every encoder block "
        "recomputed in backward). Results are equal; chunks cost about 5 % time, "
        "checkpoint about 25 %.",
        "choice",
        choices=("auto", "off", "chunks", "checkpoint"),
        advanced=True,
    )

    def __post_init__(self) -> None:
        validate(self, "train")

    @classmethod
    def knobs(cls) -> dict[str, tuple[Knob, Any]]:
        """Map of setting name to (knob, default)."""
        return knobs_of(cls)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every setting's description (the Train widget's form, ``--help``)."""
        return [describe_knob(n, k, d) for n, (k, d) in cls.knobs().items()]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (strings are parsed); unknown keys fail."""
        unknown = sorted(set(values) - set(cls.knobs()))
        if unknown:
            raise ConfigError(
                f"train has no setting {unknown[0]!r}; it has: "
                f"{', '.join(cls.knobs())}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunConfig:
    """A run: data + model + method + training settings.

    ``train_sources`` says where each training setting came from (explicit,
    the model's recipe, or the default; ``core.recipes.resolve``);
    ``init_from`` names a run whose adapter the training starts from.
    """

    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodConfig = field(default_factory=lambda: make_config("lora"))
    train: TrainConfig = field(default_factory=TrainConfig)
    train_sources: dict[str, str] = field(default_factory=dict)
    init_from: str | None = None  # a run folder whose adapter is the starting point

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "method": self.method.to_dict(),
            "train": dataclasses.asdict(self.train),
            "train_sources": dict(self.train_sources),
            "init_from": self.init_from,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        parts = ("data", "model", "method", "train", "train_sources")
        if not isinstance(values, dict):
            values = {"run config": values}
        wrong = [k for k in parts if not isinstance(values.get(k, {}), dict)]
        if "run config" in values or wrong:
            where = wrong[0] if wrong else "run config"
            raise ConfigError(f"The run config's {where!r} is not a mapping.")
        try:
            return cls(
                data=DataSpec(**values.get("data", {})),
                model=ModelSpec(**values.get("model", {})),
                method=config_from_dict(values.get("method", {"method": "lora"})),
                train=TrainConfig.from_dict(values.get("train", {})),
                train_sources=dict(values.get("train_sources", {})),
                init_from=values.get("init_from"),
            )
        except (TypeError, AttributeError) as error:
            raise ConfigError(f"Run config has an unknown field ({error}).") from None

    @classmethod
    def from_card(cls, run_dir: str | Path) -> RunConfig:
        """The settings a run folder's card recorded (to resume or start from it)."""
        from .errors import UserError
        from .runfolder import read_card

        values = read_card(run_dir).get("run_config")
        if values is None:
            raise UserError(
                f"The card of {run_dir} has no 'run_config', so its settings are "
                "unknown; start a new run with --model, --method and the data."
            )
        try:
            return cls.from_dict(values)
        except UserError as error:
            raise UserError(
                f"The card of {run_dir} is damaged ({str(error).rstrip('.')}); "
                "start a new run."
            ) from None

    def command(self, run_dir: str | Path) -> str:
        """The ``napari-peft-sam train`` call that reproduces this run."""
        import shlex

        from . import options

        args = ["napari-peft-sam", "train"]
        data_default, model_default = DataSpec(), ModelSpec()
        for spec, rows, default in (
            (self.data, options.DATA, data_default),
            (self.model, options.MODEL, model_default),
        ):
            for option in rows:
                value = getattr(spec, option.field)
                if option.field in ("images", "labels") and not self.data.dataset:
                    value = value or []  # files: both flags, as the CLI needs them
                elif value == getattr(default, option.field) and option.field != "name":
                    continue  # the spec's default (the model's name is always said)
                args += option.args(value)
        for option, value in (
            ("--method", self.method.method),
            ("--init-from", self.init_from),
        ):
            if value is not None:
                args += [option, str(value)]
        default = type(self.method)().to_dict()
        for name, value in self.method.to_dict().items():
            if value != default[name]:
                shown = ",".join(map(str, value)) if isinstance(value, list) else value
                args += ["--set", f"{name}={shown}"]
        for name, value in self.train.to_dict().items():
            if self.train_sources.get(name) == "explicit":
                option = flag(name)
                if isinstance(value, bool):
                    args.append(option if value else "--no-" + option[2:])
                else:
                    args += [option, str(value)]
        return shlex.join([*args, "--out", str(run_dir)])

    def save(self, path: str | Path) -> None:
        from .files import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            return cls.from_dict(yaml.safe_load(text))
        return cls.from_dict(json.loads(text))
