"""Base-model registry: names, the tiny model, custom checkpoints, offline errors."""

import socket

import pytest
import torch

from napari_peft_sam.core.errors import ModelNotAvailableError, UserError
from napari_peft_sam.core.models import (
    ARCHITECTURES,
    MIRROR_ENV,
    available_models,
    fetch_weights,
    load_base_model,
    random_sam,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty micro-sam cache and a download host that refuses at once."""
    monkeypatch.setenv("MICROSAM_CACHEDIR", str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    return tmp_path / "cache" / "models"


def test_every_microsam_model_is_listed():
    names = set(available_models())
    assert {
        "vit_b",
        "vit_l",
        "vit_h",
        "vit_b_lm",
        "vit_l_lm",
        "vit_b_em_organelles",
        "tiny",
    } <= names


def test_tiny_is_deterministic_and_fast_to_train():
    a, info = load_base_model("tiny")
    b, _ = load_base_model("tiny")
    assert info.source == "random" and info.architecture == "tiny"
    for (na, pa), (_, pb) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert torch.equal(pa, pb), na
    assert sum(p.numel() for p in a.parameters()) < 200_000


def test_offline_without_cached_weights_names_model_cache_and_checkpoint(offline_cache):
    with pytest.raises(ModelNotAvailableError) as info:
        load_base_model("vit_b_lm")
    message = str(info.value)
    assert "'vit_b_lm'" in message
    assert str(offline_cache) in message
    assert "--checkpoint" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence


def test_cached_weights_are_used_without_download(offline_cache):
    offline_cache.mkdir(parents=True)
    path = offline_cache / "vit_b_lm"
    path.write_bytes(b"placeholder")
    assert fetch_weights("vit_b_lm") == path  # no network touched (mirror is closed)


def test_custom_checkpoint_for_an_architecture(tmp_path):
    path = tmp_path / "my_tiny.pt"
    reference = random_sam(ARCHITECTURES["tiny"], seed=7)
    torch.save(
        {"model_state": {f"sam.{k}": v for k, v in reference.state_dict().items()}},
        path,
    )
    sam, info = load_base_model("tiny", checkpoint=path)
    assert info.source == "checkpoint" and info.hash.startswith("xxh128:")
    torch.testing.assert_close(sam.state_dict(), reference.state_dict())


def test_wrong_architecture_checkpoint_is_named(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(random_sam(ARCHITECTURES["tiny"]).state_dict(), path)
    with pytest.raises(UserError, match="does not fit a vit_b SAM|is a .* model"):
        load_base_model("vit_b", checkpoint=path)


@pytest.mark.parametrize(
    ("name", "checkpoint", "match"),
    [
        ("vit_q", None, "Unknown model 'vit_q'"),
        ("vit_t_lm", None, "MobileSAM"),
        ("tiny", "/nonexistent/file.pt", "does not exist"),
    ],
)
def test_bad_model_requests_give_one_sentence(name, checkpoint, match):
    with pytest.raises(UserError, match=match):
        load_base_model(name, checkpoint=checkpoint)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "init": {"dataset": object}}, path)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        load_base_model("tiny", checkpoint=path)
