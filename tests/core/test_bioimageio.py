"""bioimage.io packages: what is refused, what the package says, and the zoo's own test.

The package is built by micro-sam's ``export_sam_model``, which describes SAM
at a 1024 px input only; on a CPU a vit_b forward pass at 1024 px takes tens
of seconds and the export plus bioimage.io's test run several, so the full
check is marked slow.
"""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_peft_sam.core import bioimageio_export as bx
from napari_peft_sam.core.checkpoints import read_card, save_run
from napari_peft_sam.core.errors import UserError
from napari_peft_sam.core.export import export_run
from napari_peft_sam.core.methods import apply_method, make_config
from napari_peft_sam.core.models import load_base_model
from tests.core import test_export
from tests.core.test_export import NUCLEI, trained_run

vit_b_checkpoint = test_export.vit_b_checkpoint  # the same fixtures
vit_b_1024 = test_export.vit_b_1024

METRICS = {"single box": 0.61, "single point": 0.42, "ais": 0.37}


def _small_run(run_dir, name="tiny"):
    sam, info = load_base_model(name)
    cfg = make_config("lora", {"rank": 2, "alpha": 4})
    evaluations = [{"dataset": "sample data 'nuclei'", **METRICS}]
    model = apply_method(sam, cfg)
    save_run(
        run_dir,
        model,
        info,
        cfg,
        run_config=NUCLEI,
        metrics=METRICS,
        evaluations=evaluations,
    )
    return read_card(run_dir)


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_models_microsam_cannot_describe_are_refused(tmp_path, name):
    _small_run(tmp_path / "run", name)
    with pytest.raises(UserError, match=f"not this run's '{name}' base model") as info:
        export_run(tmp_path / "run", "bioimageio", tmp_path / "model.zip")
    assert str(info.value).count(". ") == 0  # one sentence
    assert not (tmp_path / "model.zip").exists()


def test_runs_off_the_1024_px_input_are_refused(vit_b_checkpoint, tmp_path):
    trained_run(vit_b_checkpoint, tmp_path / "run", "bias", {"blocks": "11"})
    with pytest.raises(UserError, match="1024 px input, but this run used 256 px"):
        export_run(tmp_path / "run", "bioimageio", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_test_image_is_held_out_and_the_page_describes_the_run(tmp_path):
    card = _small_run(tmp_path / "run")
    image, labels, where = bx.test_pair(card)
    assert image.dtype == np.uint8 and image.shape == (256, 256, 3)
    assert labels.max() >= 2 and set(np.unique(labels)) == set(range(labels.max() + 1))
    assert where.split()[0] in {"nuclei_02.tif", "nuclei_09.tif"}  # the held-out two
    page = bx.documentation(card, "my model", where, ais=True)
    for text in ("tiny (random)", "lora", "rank=2", "alpha=4", "## Validation"):
        assert text in page, text
    assert "| single box | 0.610 |" in page and "sample data 'nuclei'" in page
    assert "10.48550/arXiv.2502.00418" in page and "10.1038/s41592-024-02580-4" in page
    assert "automatic instance segmentation" in page


def test_what_reaches_microsams_exporter(tmp_path, monkeypatch):
    """Weights layout, name, authors, citations, tags and page, without the 1024 px run."""
    import micro_sam.bioimageio

    seen = {}

    def fake_export(image, labels, model_type, name, output_path, **kwargs):
        seen.update(
            kwargs, image=image, labels=labels, model_type=model_type, name=name
        )
        seen["weights"] = torch.load(kwargs["checkpoint_path"], weights_only=True)
        seen["page"] = Path(kwargs["documentation"]).read_text()
        with zipfile.ZipFile(output_path, "w") as package:
            package.writestr("rdf.yaml", "type: model\n")

    monkeypatch.setattr(micro_sam.bioimageio, "export_sam_model", fake_export)
    monkeypatch.setattr(bx, "bioimageio_problem", lambda: None)
    card = _small_run(tmp_path / "run")
    card["base_model"]["architecture"] = "vit_b"
    state, decoder = {"w": torch.ones(2)}, {"d": torch.zeros(1)}
    recipe = bx.export_package(
        state, decoder, card, tmp_path / "pkg", authors=["Ada Lovelace"], name="x/y: z"
    )
    assert (tmp_path / "pkg" / "rdf.yaml").is_file() and recipe["decoder"]
    assert seen["model_type"] == "vit_b" and seen["name"] == "x-y- z"
    assert set(seen["weights"]) == {"model_state", "decoder_state"}
    assert [a.name for a in seen["authors"]] == ["Ada Lovelace"]
    assert {str(c.doi) for c in seen["cite"]} == {doi for _, doi in bx.CITATIONS}
    assert {"peft", "lora", "micro-sam"} <= set(seen["tags"])
    assert "tiny" in seen["description"] and "## Fine-tuning" in seen["page"]
    with pytest.raises(UserError, match="already exists"):
        export_run(tmp_path / "run", "bioimageio", tmp_path / "pkg")


def test_a_folder_that_is_not_a_package_is_never_replaced(tmp_path):
    _small_run(tmp_path / "run", "tiny")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_text("meow")
    with pytest.raises(UserError, match="not a bioimage.io package folder"):
        export_run(tmp_path / "run", "bioimageio", tmp_path / "photos", overwrite=True)
    assert (tmp_path / "photos" / "cat.jpg").read_text() == "meow"


@pytest.mark.slow
@pytest.mark.parametrize("decoder", [True, False], ids=["ais", "prompts"])
def test_vit_b_package_passes_bioimageio_test(vit_b_1024, tmp_path, decoder):
    from bioimageio.core import test_model

    if bx.bioimageio_problem():
        pytest.skip(bx.bioimageio_problem())
    run = tmp_path / "run"
    trained_run(vit_b_1024, run, "lora", {"rank": 4, "alpha": 2}, decoder, 1024)
    recipe = export_run(run, "bioimageio", tmp_path / "model.zip", authors=["A. Test"])
    assert recipe["decoder"] == decoder
    summary = test_model(recipe["path"])
    print(summary.format())
    assert summary.status == "passed", summary.format()
    with zipfile.ZipFile(recipe["path"]) as package:
        names = set(package.namelist())
        rdf = package.read("rdf.yaml").decode()
    assert "vit_b.pt" in names and ("vit_b_decoder.pt" in names) == decoder
    assert "2502.00418" in rdf and "A. Test" in rdf and "napari-peft-sam" in rdf


@pytest.mark.parametrize("dataset", ["nuclei", "orgasegment"])
def test_the_package_is_tested_on_the_images_the_run_was_evaluated_on(
    tmp_path, monkeypatch, dataset
):
    """One held-out split (``core.splits.held_out``) for the run and its package;
    a benchmark's is its test split, as ``core.runs.run`` evaluates (the
    export's former stand-in took the val split)."""
    from napari_peft_sam.core import benchmarks, splits
    from napari_peft_sam.core.config import RunConfig
    from napari_peft_sam.core.data import Dataset, Sample

    def fake_benchmark(name, split):  # no download: one image named by its split
        labels = np.zeros((32, 32), np.int32)
        labels[2:9, 2:9], labels[20:30, 20:30] = 1, 2
        image = np.zeros((32, 32, 3), np.float32)
        return Dataset([Sample(image, labels, f"{name}-{split}")], name)

    monkeypatch.setattr(benchmarks, "benchmark_dataset", fake_benchmark)
    card = {"run_config": {"data": {**NUCLEI["data"], "dataset": dataset}}}
    exported = [s.name for s in bx.held_out(card)]
    run = splits.held_out(RunConfig.from_dict(card["run_config"]))
    assert exported == [s.name for s in run]
    if dataset == "nuclei":
        assert exported == ["nuclei_02.tif", "nuclei_09.tif"]
    else:
        assert exported == ["orgasegment-test"]
