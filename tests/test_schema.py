"""The config's sections (job.schema): defaults and the bounds of the training keys that long
runs use. Loading, overrides and error messages are tested in test_config."""

import pytest

from job.config import ConfigError, load_config
from job.schema import TrainConfig


def test_long_run_keys_default_to_epoch_ends_one_batch_and_the_device_precision():
    cfg = TrainConfig()
    assert cfg.checkpoint_every_steps is None and cfg.validate_every_steps is None
    assert cfg.global_batch_tokens is None and cfg.precision is None


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        ("train.checkpoint_every_steps=0", "train.checkpoint_every_steps"),
        ("train.validate_every_steps=-5", "train.validate_every_steps"),
        ("train.global_batch_tokens=10", "train.global_batch_tokens"),
        ("train.precision=fp8", "train.precision"),
    ],
)
def test_bad_long_run_keys_are_one_line_naming_the_key(pair, named):
    with pytest.raises(ConfigError) as err:
        load_config(None, [pair])
    message = str(err.value)
    assert named in message and "--set" in message and "\n" not in message


def test_every_section_refuses_unknown_keys_listing_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every: unknown key \(allowed: .*"):
        load_config(None, ["train.checkpoint_every=100"])
