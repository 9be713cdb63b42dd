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

    def describe(self) -> str:
        return self.dataset or f"{self.images} + {self.labels}"


@dataclass
class ModelSpec:
    name: str = "tiny"
    checkpoint: str | None = None
    image_size: int | None = None


@dataclass
class TrainConfig:
    """Training hyperparameters (defaults follow micro-sam and the PEFT-SAM study)."""

    lr: float = 1e-5
    iterations: int = 1000
    batch_size: int = 1
    n_objects: int = 25
    n_sub_iterations: int = 8
    mask_prob: float = 0.5
    patch_size: int | None = None  # None: the model's input size
    min_objects: int = 1
    val_interval: int = 100
    val_patches: int = 8
    early_stopping: int | None = None  # validation rounds without improvement
    scheduler: str = "plateau"  # plateau | cosine | none
    plateau_patience: int = 10
    plateau_factor: float = 0.9
    warmup: int = 0
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | float32 | bfloat16
    grad_checkpointing: bool = False
    with_decoder: bool = False  # also train micro-sam's AIS decoder (the ais metric)
    fast_path: bool = True  # fused attention, no host syncs (core/fastpath.py)
    compile: bool = False  # torch.compile the image encoder (CUDA)
    box_distortion: float = 0.025
    checkpoint_interval: int = 50

    def __post_init__(self) -> None:
        positive = (
            "iterations",
            "batch_size",
            "n_objects",
            "n_sub_iterations",
            "val_interval",
            "val_patches",
            "checkpoint_interval",
            "min_objects",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(
                    f"train: {name} must be at least 1, got {getattr(self, name)}."
                )
        if not 0 < self.lr < 1:
            raise ConfigError(f"train: lr must be between 0 and 1, got {self.lr}.")
        if not 0 <= self.mask_prob <= 1:
            raise ConfigError(
                f"train: mask_prob must be between 0 and 1, got {self.mask_prob}."
            )
        if self.patch_size is not None and not 16 <= self.patch_size <= 4096:
            raise ConfigError(
                f"train: patch_size must be 16 to 4096 pixels, got {self.patch_size}."
            )
        if self.scheduler not in ("plateau", "cosine", "none"):
            raise ConfigError(
                f"train: scheduler must be plateau, cosine or none, got {self.scheduler!r}."
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith(
            "cuda:"
        ):
            raise ConfigError(
                f"train: device must be auto, cpu or cuda, got {self.device!r}."
            )
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ConfigError(
                f"train: precision must be auto, float32 or bfloat16, got {self.precision!r}."
            )
        if self.weight_decay < 0 or self.warmup < 0:
            raise ConfigError("train: weight_decay and warmup must not be negative.")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ConfigError(
                "train: early_stopping must be at least 1 validation round."
            )


@dataclass
class RunConfig:
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodConfig = field(default_factory=lambda: make_config("lora"))
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "method": self.method.to_dict(),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                data=DataSpec(**values.get("data", {})),
                model=ModelSpec(**values.get("model", {})),
                method=config_from_dict(values.get("method", {"method": "lora"})),
                train=TrainConfig(**values.get("train", {})),
            )
        except TypeError as error:
            raise ConfigError(f"Run config has an unknown field ({error}).") from None

    def save(self, path: str | Path) -> None:
        from .checkpoints import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            return cls.from_dict(yaml.safe_load(text))
        return cls.from_dict(json.loads(text))
