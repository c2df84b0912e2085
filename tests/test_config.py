from pathlib import Path

import pytest

from job.config import Config, ConfigError, load_config
from job.pipeline import diff_configs

ROOT = Path(__file__).resolve().parents[1]


def test_sample_config_loads_with_required_keys():
    cfg = load_config(ROOT / "configs" / "sample.yaml")
    for key in ("train", "valid", "test", "source_column", "target_column"):
        assert getattr(cfg.data, key)
    assert cfg.scaling.num_workers == 2 and cfg.scaling.use_gpu is False
    assert cfg.model.attention == "luong"
    assert cfg.train.max_minutes and cfg.train.teacher_forcing_ratio == 1.0
    assert Path(cfg.storage_path).is_absolute()


def test_every_config_file_loads():
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for f in files:
        assert isinstance(load_config(f), Config)


def test_set_overrides_several_pairs_with_yaml_types():
    cfg = load_config(
        None,
        ["train.lr=5e-4", "scaling.num_workers=1", "model.bidirectional=false", "data.valid=null"],
    )
    assert cfg.train.lr == 5e-4 and cfg.scaling.num_workers == 1
    assert cfg.model.bidirectional is False and cfg.data.valid is None


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert str(f) in msg and "train.lrr" in msg and "unknown key" in msg and "lr," in msg


def test_bad_value_names_key_value_and_source():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["train.lr=-1"])
    msg = str(exc.value)
    assert "--set" in msg and "train.lr" in msg and "-1" in msg and "greater than 0" in msg


def test_unknown_section_and_malformed_pair():
    with pytest.raises(ConfigError, match="trian"):
        load_config(None, ["trian.lr=1"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["train.lr"])


def test_invalid_combinations_say_what_to_do():
    with pytest.raises(ConfigError, match="share_embeddings requires the joint vocabulary"):
        load_config(None, ["vocab.type=word"])
    with pytest.raises(ConfigError, match="must be even"):
        load_config(None, ["model.hidden_size=33"])
    cfg = load_config(None, ["vocab.type=word", "model.share_embeddings=false"])
    assert cfg.vocab.type == "word"


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_diff_configs_lists_changed_keys():
    assert diff_configs({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ["a.c: 2 -> 3"]


def test_readme_config_reference_is_generated_from_the_models():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from gen_docs import render

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "README config reference is stale: run `make docs`"
    for section in ("data", "vocab", "model", "train", "scaling", "translate"):
        assert f"`{section}." in readme


def test_elastic_workers_range():
    cfg = load_config(None, ["scaling.num_workers=[1, 4]"])
    assert cfg.scaling.ray_num_workers() == (1, 4) and cfg.scaling.max_workers == 4
    assert load_config(None, ["scaling.num_workers=3"]).scaling.ray_num_workers() == 3
    for bad in ("[4, 1]", "[0, 2]", "[1, 2, 3]", "0"):
        with pytest.raises(
            ConfigError, match=r"scaling\.num_workers.*min <= max|scaling\.num_workers.*>= 1"
        ):
            load_config(None, [f"scaling.num_workers={bad}"])
