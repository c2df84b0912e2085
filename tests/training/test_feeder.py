"""What each rank trains and validates on (job.training.feeder), fed from real Ray Datasets."""

import numpy as np
import pyarrow as pa
import pytest

from job.config import Config
from job.model.batching import list_column

from conftest import write_parts

pytestmark = pytest.mark.integration


def encoded_table(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    src = [list(rng.integers(4, 50, size=rng.integers(1, 12))) for _ in range(n)]
    tgt = [list(rng.integers(4, 50, size=rng.integers(1, 12))) for _ in range(n)]
    ids = pa.list_(pa.int32())
    return pa.table({"src_ids": pa.array(src, ids), "tgt_ids": pa.array(tgt, ids),
                     "target": pa.array([f"ref {i}" for i in range(n)])})  # fmt: skip


def test_an_epoch_yields_every_row_once_in_token_budget_batches(ray_cluster):
    from job.training.feeder import EpochBatches

    table = encoded_table(3000)
    ds = ray_cluster.data.from_arrow(table)
    cfg = Config.model_validate({"train": {"batch_tokens": 400, "shuffle_chunk_rows": 1000}})
    batches = EpochBatches(ds, cfg, rank=0, epoch=0)
    rows, sizes = 0, []
    while (item := batches.next()) is not None:
        b = item.batch
        rows += b.src.size(0)
        sizes.append(b.src.numel() + b.tgt_out.numel())
        assert item.positions is None  # a plain dataset: no epoch positions
    assert rows == 3000 and max(sizes) <= 400
    src_tokens = sum(len(x) + 1 for x in table.column("src_ids").to_pylist())
    again = EpochBatches(ds, cfg, rank=0, epoch=0)
    total = 0
    while (item := again.next()) is not None:
        total += item.batch.src_tokens
    assert total == src_tokens  # the same rows, EOS included, in a reproducible epoch


def test_epochs_differ_in_order_ranks_differ_in_batches(ray_cluster):
    from job.training.feeder import EpochBatches

    ds = ray_cluster.data.from_arrow(encoded_table(500))
    cfg = Config.model_validate({"train": {"batch_tokens": 300, "shuffle_chunk_rows": 1000}})

    def first_batch(rank, epoch):
        return EpochBatches(ds, cfg, rank, epoch).next().batch.src.tolist()

    assert first_batch(0, 0) == first_batch(0, 0)
    assert first_batch(0, 0) != first_batch(0, 1)


def test_validation_shares_cover_every_row_once(ray_cluster):
    from job.training.feeder import load_valid_share

    table = encoded_table(1001)
    ds = ray_cluster.data.from_arrow(table)
    shares = [load_valid_share(ds, rank, 3) for rank in range(3)]
    index = np.sort(np.concatenate([s.index for s in shares]))
    assert index.tolist() == list(range(1001))
    src = table.column("src_ids").to_pylist()
    for s in shares:
        assert [src[i] for i in s.index] == s.src_lists
        assert s.references == [f"ref {i}" for i in s.index]
    v, o = list_column(table.column("tgt_ids"))
    assert o[-1] == len(v)


def test_a_rank_with_no_validation_rows_gets_an_empty_share(ray_cluster):
    from job.training.feeder import load_valid_share

    share = load_valid_share(ray_cluster.data.from_arrow(encoded_table(2)), rank=3, world=4)
    assert len(share.index) == 0 and share.src_lists == [] and share.references == []


def test_parts_reader_gives_every_row_in_manifest_order(tmp_path):
    from job.training.feeder import PartsReader, load_valid_share

    parts = write_parts(tmp_path, [5, 0, 8])
    shares = [load_valid_share(PartsReader(parts), rank, 2) for rank in range(2)]
    assert shares[0].references == [f"ref {i}" for i in range(0, 13, 2)]
    assert shares[1].src_lists == [[i + 4] for i in range(1, 13, 2)]
