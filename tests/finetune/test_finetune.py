"""The finetune stage on real chest X-rays (the bundled PneumoniaMNIST sample): a few labels per class give
a detector clearly above chance, from a registered SSL encoder or from scratch; one-class mode works from
normal labels alone; splits never put a group on both sides; bad labels and encoders get one-line errors."""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PNEUMONIA, TEST_KEY, TINY_ENCODER, finetune_config
from PIL import Image
from rich.console import Console
from sklearn.metrics import roc_auc_score

from models.batchnorm import estimate_batchnorm
from models.detectors import Classifier
from models.encoders import build_encoder
from pipeline.config import load_config
from pipeline.data.augment import views
from pipeline.data.budget import Budget, draw
from pipeline.data.labelled import labelled_items, validation_split
from pipeline.data.transforms import load_fixed
from pipeline.errors import ConfigError, DataError, RegistryError
from pipeline.finetune import run_finetune
from pipeline.finetune.fit import fit_full, fit_linear
from pipeline.inference import load_encoder, score
from pipeline.pretrain import run_pretrain
from pipeline.pseudonym import image_key
from pipeline.registry.pyfunc import ServedDetector
from pipeline.suggest import run_suggest
from pipeline.suggest.run import k_centre

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def ingested(pneumonia_manifest) -> Path:
    return pneumonia_manifest


@pytest.fixture(scope="module")
def encoder_uri(ingested, store, tmp_path_factory) -> str:
    """A tiny SimCLR encoder pretrained for a few epochs on the (unlabelled) images, registered."""
    cfg = load_config(
        None,
        {
            "pretrain.manifest": str(ingested),
            "pretrain.out": str(tmp_path_factory.mktemp("pretrain")),
            "pretrain.size": 28,
            "pretrain.epochs": 3,
            "pretrain.batch_size": 32,
            "pretrain.warmup_epochs": 1,
            "pretrain.encoder": TINY_ENCODER,
            "pretrain.views": {"crop_min": 0.8, "intensity": 0.3},
            "pretrain.options": {"simclr": {"proj_hidden": 32, "proj_dim": 16}},
            "pretrain.monitor.every": 0,
            "tracking.uri": store,
        },
    )
    run_pretrain(cfg, QUIET)
    return "models:/medssl-encoder@simclr"


def test_sixteen_labels_per_class_on_a_pretrained_encoder_flag_pneumonia(ingested, encoder_uri, store, tmp_path):
    result = run_finetune(finetune_config(ingested, tmp_path, store, encoder=encoder_uri, budget="16shot"), QUIET)
    assert result.labels_used == [32, 32]  # 16 normal + 16 pneumonia scans per repeat
    assert result.labelled == 100 and 25 <= result.validation_scans <= 35
    assert result.mean > 0.75, result.val_auroc
    # Each repeat's score of each validation scan is kept: the intervals over seeds and scans read them.
    table = pd.read_csv(result.scores)
    assert list(table.columns) == ["repeat", "scan", "label", "score"] and len(table) == 2 * result.validation_scans
    per_repeat = [roc_auc_score(t.label, t.score) for _, t in table.groupby("repeat")]
    np.testing.assert_allclose(per_repeat, result.val_auroc)
    # Registered as the challenger; the registry copy scores as the saved file does.
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("medssl-detector", "challenger")
    assert result.model_uri == f"models:/medssl-detector/{version.version}"
    assert version.tags["mode"] == "linear" and version.tags["budget"] == "16shot"
    # The registered pyfunc scores the original PNGs (paths or pixel arrays) as detector.pt scores the
    # ingested NIfTIs: the same layout, scaling and crop on both roads.
    pngs = sorted((PNEUMONIA / "val").glob("*.png"))[:8]
    scorer = mlflow.pyfunc.load_model(result.model_uri)
    by_path = scorer.predict(pd.DataFrame({"path": [str(p) for p in pngs]}))["score"].to_numpy()
    by_array = scorer.predict([np.asarray(Image.open(p)) for p in pngs])["score"].to_numpy()
    keys = [image_key(TEST_KEY.encode(), p) for p in pngs]
    rows = pd.read_parquet(ingested).set_index("series_key").loc[keys]
    nifti = [{"image": str(ingested.parent / p), "modality": "OT", "slice": None} for p in rows.output_path]
    saved = torch.load(result.detector, weights_only=False)
    np.testing.assert_allclose(by_path, score(saved, load_fixed(nifti, 2, 28), torch.device("cpu")), rtol=1e-5)
    np.testing.assert_array_equal(by_path, by_array)


def test_full_finetuning_from_scratch_beats_chance(ingested, tmp_path):
    result = run_finetune(finetune_config(ingested, tmp_path, mode="full", budget="50%", seeds=1), QUIET)
    assert result.encoder == "scratch" and 30 <= result.labels_used[0] <= 36  # half of each class of ~67
    assert result.mean > 0.7, result.val_auroc


def test_full_finetuning_keeps_pretrained_batchnorm_statistics_only_with_few_labels(ingested, tmp_path):
    """Below ``gentle_below`` labelled images a pretrained encoder keeps its BatchNorm statistics; from it on,
    and always from scratch (left at their initial values, its features would never be normalised: a
    crippled baseline for SSL), the statistics are learnt and end as those of the final weights over the
    training images, not the lagging running averages."""
    cfg = finetune_config(ingested, tmp_path, mode="full", epochs=2)
    items = labelled_items(ingested, cfg.finetune.labels, TEST_KEY, 2, 0, QUIET)[:40]
    images, labels = load_fixed(items, 2, 28), np.array([it["label"] for it in items])
    augment = views(2, 28, "mae", crop_min=0.8)
    for pretrained, gentle_below, kept in ((True, 41, True), (True, 40, False), (False, 41, False)):
        encoder = load_encoder(cfg.finetune.encoder, cfg.pretrain, cfg.tracking, 0)[0]
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        settings = cfg.finetune.model_copy(update={"gentle_below": gentle_below})
        model = fit_full(
            fit_linear(encoder, 64, images, labels, 1.0, 0, CPU), images, labels, settings, augment, 0, CPU, pretrained
        )
        after = model.encoder.state_dict()
        statistics = [k for k in before if k.endswith(("running_mean", "running_var"))]
        weights = [k for k in before if k.endswith("weight")]
        assert statistics and not model.training
        assert all(not torch.equal(before[k], after[k]) for k in weights)
        assert all(torch.equal(before[k], after[k]) for k in statistics) == kept
        if not kept:
            final = estimate_batchnorm(copy.deepcopy(model), images, settings.batch_size, CPU).encoder.state_dict()
            assert all(torch.allclose(after[k], final[k], atol=1e-5) for k in statistics)


def test_one_class_mode_needs_only_normal_labels(ingested, encoder_uri, store, tmp_path):
    result = run_finetune(finetune_config(ingested, tmp_path, store, encoder=encoder_uri, mode="oneclass"), QUIET)
    # Every normal scan of the training part (50 normals less those in validation), no abnormal one.
    assert result.labels_used[0] == result.labels_used[1] and 30 <= result.labels_used[0] < 50
    assert result.mean > 0.6, result.val_auroc


def test_one_class_mode_runs_from_a_label_csv_of_normal_scans_only(ingested, encoder_uri, store, tmp_path):
    """When only normal scans are known: fitted on all of them, nothing to validate on here, registered,
    and it scores new images. (How well a one-class detector ranks is the test above: it is fitted on
    normal scans alone there too, only validated on both classes.)"""
    table = pd.read_csv(PNEUMONIA / "train" / "labels.csv")
    normals = table[table.label == 0].assign(path=lambda t: [str(PNEUMONIA / "train" / p) for p in t.path])
    normals.to_csv(tmp_path / "normals.csv", index=False)
    normal_only = {"mode": "oneclass", "labels": str(tmp_path / "normals.csv"), "budget": "100%"}
    cfg = finetune_config(ingested, tmp_path, store, encoder=encoder_uri, **normal_only)
    result = run_finetune(cfg, QUIET)
    assert result.validation_scans == 0 and np.isnan(result.mean)
    assert result.labels_used[0] == len(normals)
    assert result.model_uri is not None
    val = labelled_items(ingested, PNEUMONIA / "val" / "labels.csv", TEST_KEY, 2, 0, QUIET)
    scores = score(torch.load(result.detector, weights_only=False), load_fixed(val, 2, 28), CPU)
    assert len(scores) == len(val) and np.isfinite(scores).all() and scores.std() > 0


def test_splits_keep_each_group_on_one_side_and_budgets_draw_from_training_only():
    rng = np.random.default_rng(0)
    items = [
        {"scan": f"scan{i}", "voxels": f"voxels{i}", "group": f"patient{i // 3}", "label": int(rng.random() < 0.4)}
        for i in range(300)
    ]
    for it in items:  # a patient's scans share one label here, as a diagnosis per patient would
        it["label"] = int(it["group"][-1]) % 2
    train, val = validation_split(items, 0.25, seed=1)
    assert not {it["group"] for it in train} & {it["group"] for it in val}
    assert len(train) + len(val) == 300 and {it["label"] for it in val} == {0, 1}
    for budget, per_class in ((Budget.parse("4shot"), 4), (Budget.parse("10%"), None)):
        drawn = draw(train, budget, seed=3)
        assert {it["scan"] for it in drawn} <= {it["scan"] for it in train}
        for label in (0, 1):
            available = sum(it["label"] == label for it in train)
            assert sum(it["label"] == label for it in drawn) == (per_class or round(available * 0.1))
    assert draw(train, Budget.parse("4shot"), 3) == draw(train, Budget.parse("4shot"), 3)  # fixed seeds repeat
    assert {it["label"] for it in draw(train, Budget.parse("100%"), 3, classes=(0,))} == {0}  # one-class draws
    # The same images named by another pseudonym key (other series keys, in another order) draw alike.
    renamed = [{**it, "scan": hashlib.sha256(f"other key {it['scan']}".encode()).hexdigest()} for it in train]
    drawn = {it["voxels"] for it in draw(train, Budget.parse("4shot"), 3)}
    assert {it["voxels"] for it in draw(renamed, Budget.parse("4shot"), 3)} == drawn


@pytest.mark.parametrize("spec", ["0%", "101%", "shot", "16"])
def test_a_bad_budget_is_named(spec):
    with pytest.raises(ValueError, match="budget must be"):
        Budget.parse(spec)
    with pytest.raises(ConfigError, match=r"invalid config at 'finetune\.budget': .*budget must be"):
        load_config(None, {"finetune.budget": spec})
    with pytest.raises(ConfigError, match=r"invalid config at 'curve\.budgets\.1': .*budget must be"):
        load_config(None, {"curve.budgets": ["4shot", spec]})


def test_bad_labels_and_encoders_are_named(ingested, tmp_path):
    stranger = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["elsewhere.png"], "label": [1]}).to_csv(stranger, index=False)
    with pytest.raises(DataError, match="none of its 1 paths is an accepted row"):
        run_finetune(finetune_config(ingested, tmp_path, labels=str(stranger)), QUIET)
    with pytest.raises(DataError, match="no labelled rows"):
        run_finetune(finetune_config(ingested, tmp_path, labels=None), QUIET)
    with pytest.raises(RegistryError, match="encoder: model not found"):
        run_finetune(finetune_config(ingested, tmp_path, encoder=str(tmp_path / "none.pt")), QUIET)


def test_k_centre_covers_every_cluster_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3]
    points = np.concatenate([c + 0.05 * rng.standard_normal((10, 4)) for c in centres])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    picks = k_centre(points, np.empty((0, 4)), 3)
    assert sorted(p // 10 for p in picks) == [0, 1, 2]
    # With cluster 0 labelled already, the two picks go to the other clusters.
    assert sorted(p // 10 for p in k_centre(points, points[:1], 2)) == [1, 2]


def test_suggested_scans_are_unlabelled_files_that_finetune_reads_once_labelled(ingested, encoder_uri, store, tmp_path):
    splits = [pd.read_csv(PNEUMONIA / s / "labels.csv").assign(split=s) for s in ("train", "val")]
    truth = pd.concat(splits, ignore_index=True)
    truth["path"] = [str(PNEUMONIA / s / p) for s, p in zip(truth.split, truth.path, strict=True)]
    truth = truth.drop(columns="split")
    known = truth.groupby("label").head(5)
    known.to_csv(tmp_path / "known.csv", index=False)
    cfg = finetune_config(ingested, tmp_path, store)
    suggest = {
        "encoder": encoder_uri,
        "manifest": ingested,
        "labels": tmp_path / "known.csv",
        "n": 12,
        "out": tmp_path / "suggested.csv",
    }
    cfg = cfg.model_copy(update={"suggest": cfg.suggest.model_copy(update=suggest)})
    result = run_suggest(cfg, QUIET)
    suggested = pd.read_csv(tmp_path / "suggested.csv", keep_default_na=False)
    assert result.suggested == 12 and list(suggested.columns) == ["path", "label"] and set(suggested.label) == {""}
    assert suggested.path.is_unique and all(Path(p).is_file() for p in suggested.path)
    assert not set(suggested.path) & set(known.path)
    # The radiologist fills in the labels; finetune takes the CSV as it is.
    suggested["label"] = suggested.path.map(dict(zip(truth.path, truth.label, strict=True))).astype(int)
    pd.concat([known, suggested]).to_csv(tmp_path / "labelled.csv", index=False)
    again = finetune_config(ingested, tmp_path / "ft", labels=str(tmp_path / "labelled.csv"), val_fraction=0.5, seeds=1)
    assert run_finetune(again, QUIET).labelled == 22
    # Labelled on the review page instead (series_key,label): the next suggestions leave those scans out too.
    reviewed = pd.DataFrame({"series_key": [image_key(TEST_KEY.encode(), p) for p in suggested.path], "label": 1})
    reviewed.to_csv(tmp_path / "reviewed.csv", index=False)
    cfg = cfg.model_copy(update={"suggest": cfg.suggest.model_copy(update={"labels": tmp_path / "reviewed.csv"})})
    run_suggest(cfg, QUIET)
    assert not set(pd.read_csv(tmp_path / "suggested.csv").path) & set(suggested.path)


def test_real_patients_with_several_x_rays_stay_on_one_side(sample_manifest):
    """The sample's chest X-rays: patients 3 and 5 have eight images each; a split never divides them."""
    ingested, _ = sample_manifest
    labelled = labelled_items(ingested / "manifest.parquet", None, TEST_KEY, 2, 0, QUIET)
    for seed in range(5):
        train, val = validation_split(labelled, 0.3, seed)
        assert not {it["group"] for it in train} & {it["group"] for it in val}
        sizes = pd.Series([it["group"] for it in labelled]).value_counts()
        assert sorted(sizes)[-2:] == [8, 8]  # the two patients are two groups, not sixteen images


def test_the_registered_scorer_refuses_a_3d_detector_in_one_line(tmp_path):
    """The pyfunc serves 2D images; a 3D detector's volumes go through ingest and medssl score instead of
    failing deep inside a transform."""
    encoder, dim = build_encoder(3, widths=(4, 8, 8, 8), layers=(1, 1, 1, 1))
    detector = Classifier(encoder, dim)
    detector.input_spec = {"spatial_dims": 3, "size": 16, "volume_side": 32}
    torch.save(detector, tmp_path / "detector.pt")
    scorer = ServedDetector()
    scorer.load_context(SimpleNamespace(artifacts={"detector": str(tmp_path / "detector.pt")}))
    with pytest.raises(ValueError, match="scores 3D volumes: ingest the series"):
        scorer.predict(None, [np.zeros((28, 28), np.uint8)])
