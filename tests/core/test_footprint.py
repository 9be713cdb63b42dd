"""The memory estimate (core.footprint): calibrated against measured peaks, one
home for the attention's chunking, and the saving ``auto`` picks with it."""

import dataclasses
import math

import pytest
import torch

from napari_peft_sam.core import budget, footprint
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig
from napari_peft_sam.core.methods import make_config
from napari_peft_sam.core.models import ARCHITECTURES
from napari_peft_sam.core.recipes import resolve

VIT_B = ARCHITECTURES["vit_b"]
LORA = make_config("lora", {"rank": 32})
# Peak RSS (MB) of 2 steps of vit_b at 1024 px, bf16, the recipe's settings
# (25 objects, 512 px patches), 2-core EPYC: benchmarks/bench_train.py --memory
MEASURED = {("off", 25): 15264, ("off", 1): 12955, ("chunks", 25): 3443}


def default_vit_b(**train):
    """The recipe ``train --model vit_b --iterations 2 --device cpu`` resolves to."""
    cfg, _ = resolve({"iterations": 2, "device": "cpu", **train}, "vit_b")
    return cfg


@pytest.mark.parametrize(("level", "objects"), sorted(MEASURED))
def test_the_estimate_is_within_20_percent_of_the_measured_peak(level, objects):
    cfg = default_vit_b(n_objects=objects)
    need = footprint.estimate_peak_mb(VIT_B, LORA, cfg, "cpu", True, level, 1024)
    assert need == pytest.approx(MEASURED[level, objects], rel=0.2)


def test_each_object_costs_what_the_decoder_term_says():
    """The measured cost of 24 more objects, 96 MB each, within 20 %."""
    many, one = (
        footprint.estimate_peak_mb(
            VIT_B, LORA, default_vit_b(n_objects=n), "cpu", True, "off", 1024
        )
        for n in (25, 1)
    )
    measured = MEASURED["off", 25] - MEASURED["off", 1]
    assert many - one == pytest.approx(measured, rel=0.2)


def test_attention_rows_chunk_cpus_and_lean_attention_only():
    # a global block of vit_b at 1024 px: 64 x 64 tokens, 12 heads
    assert footprint.attention_rows(1, 12, 64, 64, lean=False, cpu=False) == 64
    cpu = footprint.attention_rows(1, 12, 64, 64, lean=False, cpu=True)
    lean = footprint.attention_rows(1, 12, 64, 64, lean=True, cpu=False)
    assert cpu == 1 and lean == 5
    assert footprint.attention_rows(1, 1, 4, 4, lean=True, cpu=True) == 4


def test_the_fast_path_attends_in_the_chunks_the_estimate_counts(monkeypatch):
    """One home for the chunking: fastpath's SDPA calls are attention_rows' chunks."""
    from napari_peft_sam.core import fastpath

    monkeypatch.setattr(footprint, "CACHE_ELEMENTS", 2 * 14 * 14 * 14 * 3)  # 3 rows
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(args[0].shape[2])
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(fastpath.F, "scaled_dot_product_attention", counted)

    class Attention(torch.nn.Module):
        num_heads, scale, use_rel_pos = 2, 0.125, True
        rel_pos_h = torch.nn.Parameter(torch.zeros(27, 8))
        rel_pos_w = torch.nn.Parameter(torch.zeros(27, 8))

    rows = footprint.attention_rows(1, 2, 14, 14, lean=False, cpu=True)
    fastpath._attend(Attention(), torch.randn(1, 14, 14, 3 * 16), 14, 14)
    assert rows == 3 and len(calls) == math.ceil(14 / rows)
    assert calls[0] == rows * 14


def test_budget_keeps_answering_with_the_footprint():
    assert budget.estimate_peak_mb is footprint.estimate_peak_mb
    assert budget.OBJECT_CHUNK == footprint.OBJECT_CHUNK


def plain_vit_b():
    return RunConfig(
        DataSpec(dataset="nuclei"), ModelSpec("vit_b"), LORA, default_vit_b()
    )


def test_auto_chunks_the_plain_default_command_even_with_memory_to_spare(
    monkeypatch,
):
    """22 GB free: 'off' would fit in half, but chunks need a fifth of it."""
    monkeypatch.setattr(budget, "available_mb", lambda device: 22 * 1024)
    plan = budget.preflight(plain_vit_b(), "cpu", amp=torch.bfloat16)
    assert plan.changes == {"memory_saving": "chunks"}
    assert plan.estimate_mb < 8 * 1024
    assert "memory saving 'chunks'" in plan.message
    assert "of 22.0 GB free" in plan.message


def test_a_small_saving_is_not_worth_chunks(monkeypatch):
    """vit_b at 256 px: chunks save far less than half, so 'off' stays."""
    monkeypatch.setattr(budget, "available_mb", lambda device: 22 * 1024)
    config = plain_vit_b()
    config.model.image_size = 256
    plan = budget.preflight(config, "cpu", amp=torch.bfloat16)
    off, chunks = (
        footprint.estimate_peak_mb(VIT_B, LORA, config.train, "cpu", True, level, 256)
        for level in ("off", "chunks")
    )
    assert chunks >= budget.WORTH_SAVING * off
    assert plan.changes == {"memory_saving": "off"} and plan.message is None


def test_the_message_stands_without_knowing_the_memory_free(monkeypatch):
    monkeypatch.setattr(budget, "available_mb", lambda device: None)
    plan = budget.preflight(plain_vit_b(), "cpu", amp=torch.bfloat16)
    assert plan.changes == {"memory_saving": "chunks"}
    assert plan.message.startswith("Memory: about ") and "free" not in plan.message
    assert plan.message.endswith("same results).")


def test_a_forced_level_is_not_second_guessed(monkeypatch):
    monkeypatch.setattr(budget, "available_mb", lambda device: 22 * 1024)
    config = plain_vit_b()
    config.train = dataclasses.replace(config.train, memory_saving="off")
    plan = budget.preflight(config, "cpu", amp=torch.bfloat16)
    assert plan.changes == {} and plan.message is None
