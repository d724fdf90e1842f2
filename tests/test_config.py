"""configs/default.yaml documents every key with its default; overrides apply in order; typos fail."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT

from pipeline.config import Config, ConfigError, flat_params, load_config
from pipeline.data.presets import VIEW_PRESETS

DEFAULT = ROOT / "configs" / "default.yaml"


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def test_default_yaml_equals_model_defaults():
    documented = yaml.safe_load(DEFAULT.read_text())
    assert load_config(DEFAULT).model_dump(mode="json") == Config().model_dump(mode="json")
    assert _keys(documented) == _keys(Config().model_dump(mode="json"))


def test_every_key_has_a_comment():
    lines = DEFAULT.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#"):
            assert lines[i - 1].strip().startswith("#"), f"undocumented key: {line.strip()}"


def test_file_then_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("ingest:\n  tilt: raw\n  compress: false\ndask:\n  workers: 3\n")
    cfg = load_config(cfg_file, {"ingest.tilt": "resample", "dask.workers": None})
    assert cfg.ingest.tilt == "resample"  # flag wins
    assert cfg.dask.workers == 3  # an unset flag leaves the file's value
    assert cfg.ingest.compress is False


@pytest.mark.parametrize(
    ("text", "message"),
    [("ingest:\n  tillt: raw\n", "ingest.tillt"), ("ingest:\n  tilt: sideways\n", "ingest.tilt"), ("- 1\n", "mapping")],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg_file)


def test_view_presets_name_a_recipe_in_yaml_and_flags(tmp_path):
    """``views: us`` in a file, or a preset name as a flag, is that modality's recipe; each ``-weak`` form keeps
    its geometry's flips and changes no intensity; an unknown name lists the presets."""
    path = tmp_path / "c.yaml"
    path.write_text("pretrain:\n  views: us\nfinetune:\n  semi: {weak: us-weak, strong: us}\n")
    config = load_config(path, {"pretrain.views": "mr"})
    assert config.pretrain.views.model_dump() == VIEW_PRESETS["mr"]
    assert config.finetune.semi.weak.model_dump() == VIEW_PRESETS["us-weak"]
    for name, recipe in VIEW_PRESETS.items():
        if name.endswith("-weak"):
            assert recipe["intensity"] == 0 and recipe["flip_axes"] == VIEW_PRESETS[name[:-5]]["flip_axes"]
    with pytest.raises(ConfigError, match=r"'pretrain\.views'.*unknown view preset 'ct'; presets: cxr, cxr-weak"):
        load_config(None, {"pretrain.views": "ct"})


def test_secrets_reach_mlflow_params_masked():
    """A database URL may carry a password and a reader token is one: the params MLflow logs show neither."""
    config = load_config(
        DEFAULT,
        {
            "review.database": "postgresql://medssl:hunter2-pw@db.local/review",
            "review.readers": [{"name": "ann-example", "token": "t" * 24}],
        },
    )
    params = flat_params(config)
    assert config.review.database.get_secret_value().endswith("@db.local/review")
    assert not any("hunter2" in v or "ann-example" in v or "t" * 24 in v for v in params.values())
    assert params["review.readers"] == "1 reader(s)"
