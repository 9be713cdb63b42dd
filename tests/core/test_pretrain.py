"""The demo model's pretraining: settings, card and the previous model beside it."""

import json

import torch

from napari_peft_sam.core import pretrain as P
from napari_peft_sam.core.demo_scores import held_out_sets
from napari_peft_sam.core.models import ARCHITECTURES, file_hash, random_sam


def test_continued_pretraining_writes_weights_and_a_card_with_the_previous_model(
    tmp_path, monkeypatch
):
    before = (P.PRETRAIN.iterations, P.PRETRAIN.lr)
    small = P.training_data
    monkeypatch.setattr(P, "training_data", lambda: small(6))
    monkeypatch.setattr(
        P, "held_out_sets", lambda: held_out_sets(1, ("v4", "star_convex"))
    )
    weights = tmp_path / "demo_sam.pt"
    torch.save(random_sam(ARCHITECTURES["demo"], seed=3).state_dict(), weights)
    start = file_hash(weights)
    P.main(
        ["--init", str(weights), "--out", str(weights), "--steps", "2"]
        + ["--iterations", "3", "--lr", "1e-4", "--warmup", "0"]
    )
    card = json.loads(weights.with_suffix(".json").read_text())
    assert (P.PRETRAIN.iterations, P.PRETRAIN.lr) == before  # the constant is kept
    run = card["pretraining"]
    assert (run["iterations"], run["lr"], run["warmup"], run["steps_done"]) == (
        3,
        1e-4,
        0,
        2,
    )
    assert run["init_hash"] == start and start[:16] in run["method"]
    assert "synthetic_v4" in run["data"] and "50% changed" in run["data"]
    assert card["reproduce"] == (
        "python -m napari_peft_sam.core.pretrain --steps 2 --iterations 3 --lr 0.0001"
        " --warmup 0 --init demo_sam.pt"
    )
    assert card["version"] == P.VERSION and card["previous"]["version"] == P.VERSION - 1
    assert card["previous"]["file_hash"] == start != file_hash(weights)
    for key in ("held_out", "masks"):
        assert set(card[key]) == set(card["previous"][key]) == {"v4", "star_convex"}
    assert set(card["held_out_data"]) >= {"star_convex", "widefield", "v4"}
    assert max(card["click_latency_ms"].values()) > 0
    trained = torch.load(weights, weights_only=True)
    assert set(trained) == set(random_sam(ARCHITECTURES["demo"]).state_dict())
