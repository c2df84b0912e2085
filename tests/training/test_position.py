"""The position in an epoch (job.training.position): each epoch's order, the ranks' shares, and the
bookkeeping that lets a restart with any worker count train each row of the epoch once."""

import numpy as np
import pytest

from job.config import Config
from job.training.feeder import EpochBatches
from job.training.position import (
    EpochOrder,
    EpochProgress,
    EpochShare,
    digest,
    digest_of_parts,
    load_done,
    row_ids,
    save_done,
)

from conftest import write_parts


def share_rows(order: EpochOrder, positions) -> list[int]:
    """The corpus rows (src_ids [i + 4] is row i, conftest.write_parts) of a share, read."""
    got = []
    for t in EpochShare(order, positions).iter_batches(batch_size=7):
        assert t.num_rows <= 7
        got += [x[0] - 4 for x in t.column("src_ids").to_pylist()]
    return got


def test_every_epoch_is_a_new_order_of_every_row_for_any_worker_count(tmp_path):
    parts = write_parts(tmp_path, [40, 3, 25, 32])
    order = EpochOrder(parts, seed=1, epoch=0)
    one = share_rows(order, order.share(0, 1))
    assert sorted(one) == list(range(100)) and one != list(range(100))  # shuffled within parts
    for world in (2, 3, 7):
        shares = [order.share(rank, world) for rank in range(world)]
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # near-equal, no row left out
        # the shares of any worker count are pieces of one sequence, in rank order
        assert [i for s in shares for i in share_rows(order, s)] == one
    assert one == share_rows(EpochOrder(parts, 1, 0), np.arange(100))  # a function of (seed, epoch)
    assert one != share_rows(EpochOrder(parts, 1, 1), np.arange(100))
    assert one != share_rows(EpochOrder(parts, 2, 0), np.arange(100))


def train_some(order, world, steps, done=None, cfg=None):
    """Every rank trains `steps` batches of its share (as job.training.worker does); returns the
    ranks' progress and the corpus rows each trained."""
    cfg = cfg or Config.model_validate({"train": {"batch_tokens": 64, "shuffle_chunk_rows": 1000}})
    progress, trained = [], []
    for rank in range(world):
        p = EpochProgress(order, rank, world, done)
        batches = EpochBatches(
            EpochShare(order, p.positions), cfg, rank, order.epoch, on_chunk=p.start_chunk
        )
        rows = []
        for _ in range(steps):
            item = batches.next()
            if item is None:
                break
            p.trained(item.positions, item.ids)
            rows += [x - 4 for x in item.batch.src[:, 0].tolist()]
        progress.append(p)
        trained.append(rows)
    return progress, trained


@pytest.mark.parametrize(("before", "after"), [(2, 2), (2, 3), (3, 1)])
def test_a_restart_with_any_worker_count_trains_the_rest_of_the_epoch_once(tmp_path, before, after):
    """Ranks train part of an epoch, chunks finished and chunks half done (shuffle_chunk_rows
    1000 with 1,500 rows per rank: both kinds); the checkpoint's bitmap then gives a new worker
    count the rest; every row is trained once, and the digests add up to the whole data's."""
    parts = write_parts(tmp_path, [1200, 700, 2100, 1000, 1600])  # 6,600 rows
    order = EpochOrder(parts, seed=3, epoch=2)
    cfg = Config.model_validate({"train": {"batch_tokens": 64, "shuffle_chunk_rows": 1000}})
    progress, first = train_some(order, before, steps=120, cfg=cfg)
    done, rows, total = progress[0].combine([p.local() for p in progress])
    assert rows == sum(map(len, first)) == done.sum()
    save_done(str(tmp_path), done)
    restored = {"done": load_done(str(tmp_path), order.total), "rows": rows, "digest": total}
    assert (restored["done"] == done).all()

    progress2, second = train_some(order, after, steps=10_000, done=restored, cfg=cfg)
    everything = [r for rows in first + second for r in rows]
    assert sorted(everything) == list(range(order.total))  # each row once: none redone, none left
    final_rows = rows + sum(p.rows for p in progress2)
    final_digest = (total + sum(p.digest for p in progress2)) % (1 << 64)
    assert final_rows == order.total and final_digest == digest_of_parts(parts)


def test_the_digest_is_order_free_and_tells_rows_apart():
    ids = row_ids(3, np.arange(1000))
    assert digest(ids) == digest(ids[::-1]) == (digest(ids[:400]) + digest(ids[400:])) % (1 << 64)
    assert digest(ids) != digest(row_ids(3, np.arange(1, 1001)))
    assert digest(ids) != digest(np.concatenate([ids[:-1], ids[:1]]))  # a row twice, one missed
