"""Precision per machine and model: forced values, the CPU rule, the cache."""

import json

import pytest
import torch

from napari_peft_sam.core import device as dev


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dev.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(dev, "_decided", {})
    monkeypatch.setattr(dev, "machine_busy", lambda: False)
    return tmp_path / dev.CACHE_FILE


def fake_timing(calls, dtype="bfloat16"):
    def timing(arch, size, purpose):
        calls.append((arch.name, size, purpose))
        return {"dtype": dtype, "float32_s": 1.0, "bfloat16_s": 0.5}

    return timing


def test_forced_precision_wins_everywhere(cache):
    assert dev.autocast_for("cpu", "vit_b", "float32") is None
    assert dev.autocast_for("cpu", "vit_b", "bfloat16") is torch.bfloat16
    assert not cache.exists()  # nothing was timed


def test_cpu_without_native_bf16_is_float32_without_timing(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda caps=None: False)
    monkeypatch.setattr(dev, "time_block_precisions", fake_timing(calls))
    assert dev.autocast_for("cpu", "vit_b") is None
    assert calls == [] and not cache.exists()


def test_timing_runs_once_and_is_cached_per_model_and_purpose(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda caps=None: True)
    monkeypatch.setattr(dev, "time_block_precisions", fake_timing(calls))
    assert dev.autocast_for("cpu", "vit_b_lm", purpose="train") is torch.bfloat16
    assert dev.autocast_for("cpu", "vit_b") is torch.bfloat16  # same architecture
    assert dev.autocast_for("cpu", "vit_b", purpose="infer") is torch.bfloat16
    assert calls == [("vit_b", 1024, "train"), ("vit_b", 1024, "infer")]
    stored = json.loads(cache.read_text())
    assert len(stored) == 2 and all(dev.machine_key() in k for k in stored)
    entry = next(iter(stored.values()))
    assert entry["torch"] == torch.__version__ and "avx512_bf16" in entry
    # a new process reads the file instead of timing again
    monkeypatch.setattr(dev, "_decided", {})
    assert dev.autocast_for("cpu", "vit_b") is torch.bfloat16
    assert len(calls) == 2


def test_a_choice_timed_on_a_busy_machine_is_used_but_not_cached(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda caps=None: True)
    monkeypatch.setattr(dev, "time_block_precisions", fake_timing(calls))
    monkeypatch.setattr(dev, "machine_busy", lambda: True)
    assert dev.autocast_for("cpu", "vit_b") is torch.bfloat16
    assert dev.autocast_for("cpu", "vit_b") is torch.bfloat16  # decided for now
    assert len(calls) == 1 and not cache.exists()
    monkeypatch.setattr(dev, "_decided", {})  # the next process, on a quiet machine
    monkeypatch.setattr(dev, "machine_busy", lambda: False)
    assert dev.autocast_for("cpu", "vit_b") is torch.bfloat16
    assert len(calls) == 2 and cache.exists()


def test_machine_busy_reads_the_load_average(monkeypatch):
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (0.4, 0, 0))
    assert not dev.machine_busy()
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (6.0, 0, 0))
    assert dev.machine_busy()


def test_a_damaged_cache_is_timed_again(cache, monkeypatch):
    calls = []
    cache.write_text("{not json")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda caps=None: True)
    monkeypatch.setattr(dev, "time_block_precisions", fake_timing(calls, "float32"))
    assert dev.autocast_for("cpu", "demo") is None
    assert calls and json.loads(cache.read_text())


def test_real_timing_of_the_tiny_block_decides():
    entry = dev.time_block_precisions(dev_arch("tiny"), 256, "train", steps=1)
    assert entry["dtype"] in ("float32", "bfloat16")
    assert entry["float32_s"] > 0 and entry["bfloat16_s"] > 0
    assert entry["tokens"] == 256


def dev_arch(name):
    from napari_peft_sam.core.models import architecture_of

    return architecture_of(name)


def test_unknown_precision_is_a_user_error():
    from napari_peft_sam.core.errors import UserError

    with pytest.raises(UserError, match="precision"):
        dev.autocast_for("cpu", "tiny", "half")
