"""A killed pretraining run resumes from its checkpoint to exactly the state of an uninterrupted run."""

from __future__ import annotations

import torch
from monai.data import ThreadDataLoader

from models import METHODS
from models.encoders import build_encoder
from pipeline.checkpoint import read_state, restore_state, save_state
from pipeline.data.augment import views
from pipeline.data.transforms import KEY
from pipeline.device import resolve
from pipeline.pretrain.loop import seed_epoch, train_epoch
from pipeline.pretrain.views import ViewPairs, dataset


def _setup(sample_manifest, method="moco"):
    out, manifest = sample_manifest
    rows = [{KEY: str(out / r.output_path), "modality": r.modality} for r in manifest.itertuples() if r.kind == "image"]
    torch.manual_seed(0)
    data = dataset(rows, 2, 32)
    pairs = ViewPairs(views(2, 32, method))
    order = torch.Generator().manual_seed(0)
    loader = ThreadDataLoader(data, batch_size=8, shuffle=True, generator=order, drop_last=True, collate_fn=pairs)
    encoder, dim = build_encoder(2, widths=(8, 16, 32, 64), layers=(1, 1, 1, 1))
    model = METHODS[method](encoder, dim, proj_hidden=32, proj_dim=16, queue_size=32, momentum=0.9)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, loader, pairs, optimiser, scaler, order


def test_resume_reproduces_the_uninterrupted_run(sample_manifest, tmp_path):
    setup = resolve("cpu")
    straight = _setup(sample_manifest)
    model, loader, view, optimiser, scaler, order = straight

    def epoch(e, model, loader, view, optimiser, scaler, order):
        seed_epoch(7, e, order, view)
        return train_epoch(model, loader, optimiser, scaler, setup)

    losses = [epoch(e, model, loader, view, optimiser, scaler, order) for e in range(3)]

    first = _setup(sample_manifest)
    m1, loader1, view1, opt1, scaler1, order1 = first
    epoch(0, m1, loader1, view1, opt1, scaler1, order1)
    save_state(tmp_path / "ckpt.pt", {"model": m1, "optimiser": opt1, "scaler": scaler1}, epoch=1)
    del first, m1  # the run is "killed"

    m2, loader2, view2, opt2, scaler2, order2 = _setup(sample_manifest)
    state = read_state(tmp_path / "ckpt.pt")
    restore_state(state, {"model": m2, "optimiser": opt2, "scaler": scaler2})
    done = state["epoch"]
    assert done == 1
    resumed = [epoch(e, m2, loader2, view2, opt2, scaler2, order2) for e in range(done, 3)]
    assert resumed == losses[1:]
    for a, b in zip(model.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
