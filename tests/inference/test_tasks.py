"""What a bulk job does to a block of rows (job.inference.tasks), without Ray: on an untrained
checkpoint."""

import json

import pyarrow as pa
import pytest

from job.inference.bulk import BulkOptions
from job.inference.tasks import Task, empty_values, output_columns, to_csv_cell

from conftest import SRC, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_translate_columns_follow_the_options():
    def names(**kw):
        return [n for n, _ in output_columns(BulkOptions(**kw))]

    assert names() == ["translation", "score", "status"]
    assert names(nbest=3, alignments=True) == [
        "translation", "score", "status", "nbest_translations", "nbest_scores", "alignment"
    ]  # fmt: skip
    assert names(task="score") == ["score", "score_per_token", "tokens", "status"]
    assert names(task="score", reverse_checkpoint="r")[-4:] == [
        "reverse_score", "reverse_score_per_token", "dual_score", "status"
    ]  # fmt: skip


def test_translate_block_with_nbest_and_alignments(checkpoint):
    opts = BulkOptions(beam=3, nbest=2, alignments=True, batch_size=4)
    out = Task(checkpoint, opts, threads=1).run({"source": ["Save the file", ""]}, ["0:0", "0:1"])
    assert out["status"] == ["ok", "empty_source"]
    assert (
        len(out["nbest_translations"][0]) == 2
        and out["nbest_translations"][0][0] == out["translation"][0]
    )
    assert out["alignment"][0] and out["alignment"][1] == []
    assert out["nbest_translations"][1] == [] and out["score"][1] == 0.0


def test_score_block_with_a_reverse_model_gives_the_dual_score(checkpoint):
    opts = BulkOptions(task="score", reverse_checkpoint=checkpoint)
    out = Task(checkpoint, opts, threads=1).run(
        {"source": ["Save the file", "Open file"], "target": ["Enregistrer le fichier", None]}, []
    )
    assert out["status"] == ["ok", "missing_target"]
    hf, hr = -out["score_per_token"][0], -out["reverse_score_per_token"][0]
    assert out["dual_score"][0] == pytest.approx(abs(hf - hr) + (hf + hr) / 2)
    assert out["tokens"][0] > 1 and out["score"][0] < 0


def test_sampled_rows_depend_on_their_keys_not_their_neighbours(checkpoint):
    task = Task(checkpoint, BulkOptions(sampling="topk:20", seed=1, batch_size=2), threads=1)
    a = task.run({"source": SRC[:4]}, ["k0", "k1", "k2", "k3"])
    b = task.run({"source": SRC[2:3]}, ["k2"])
    assert b["translation"][0] == a["translation"][2]
    assert b["score"][0] == pytest.approx(a["score"][2], abs=1e-4)


def test_unprocessed_rows_and_csv_cells():
    values = empty_values(BulkOptions(nbest=2, alignments=True), 2)
    assert values["translation"] == ["", ""] and values["alignment"] == [[], []]
    table = pa.table({"alignment": pa.array([[0, 2]], pa.list_(pa.int32())), "x": [1]})
    cell = to_csv_cell(table)
    assert (
        json.loads(cell.column("alignment")[0].as_py()) == [0, 2]
        and cell.column("x")[0].as_py() == 1
    )
