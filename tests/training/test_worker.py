"""The training loop's own parts (job.training.worker) that run without Ray: restoring a checkpoint
with its position in the epoch. The loop itself runs under Ray Train in test_trainer, test_pipeline
and test_submit."""

import numpy as np
import torch

from job.checkpoint import read_checkpoint, write_checkpoint
from job.training.position import save_done
from job.training.step import TrainStats
from job.training.worker import _default_precision, _restore

from conftest import make_checkpoint


def test_a_mid_epoch_checkpoint_restores_its_position(tmp_path):
    source = read_checkpoint(make_checkpoint(tmp_path / "untrained"))
    model = source.model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(*[torch.tensor([[5, 2]]), torch.tensor([2]), torch.tensor([[1, 5]]),
            torch.tensor([[5, 2]])])[0].backward()  # fmt: skip
    optimizer.step()
    parts = [("a.parquet", 6), ("b.parquet", 4)]
    done = np.zeros(10, dtype=bool)
    done[[1, 2, 7]] = True
    for epoch_of_position, expect in ((3, True), (2, False)):
        directory = tmp_path / f"ckpt{epoch_of_position}"
        state = {**TrainStats(step=40, epoch=3).state_dict(),
                 "position": {"epoch": epoch_of_position, "rows": 3, "digest": 12}}  # fmt: skip
        write_checkpoint(str(directory), model, optimizer, state, source.cfg, source.vocab)
        save_done(str(directory), done)
        fresh = source.model()
        fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
        stats = TrainStats()
        position = _restore(str(directory), fresh, fresh_optimizer, None, stats, parts)
        assert (stats.step, stats.epoch) == (40, 3)
        assert (
            fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
        )
        if expect:  # taken in the epoch the run continues: where in it
            assert position["rows"] == 3 and position["digest"] == 12
            assert position["done"].tolist() == done.tolist()
        else:  # a position of an epoch already finished
            assert position is None


def test_gpus_default_to_bf16_cpus_to_fp32():
    assert _default_precision(torch.device("cuda", 0)) == "bf16"
    assert _default_precision(torch.device("cpu")) == "fp32"
