"""Corpora nobody cleaned, read on a real local Ray cluster: usable rows kept, every other row
counted by reason and written to the rejects files with its file and line. read = used + rejected.

Every case runs twice: the file as one piece, and cut into pieces of a few bytes
(job.corpus.pieces), so that a piece boundary falls inside every kind of bad row: the counts must
not move."""

import gzip
import io
from dataclasses import dataclass

import pytest

from job.config import load_config
from job.corpus.parsers import lines_of, parse_records
from job.corpus.pieces import PIECE_BYTES
from job.corpus.prepare import SplitData, classify_split, read_parts, read_rejects
from job.errors import DataError

from conftest import tiny_overrides

pytestmark = pytest.mark.integration

HEADER = b"source,target\n"


@pytest.fixture(params=[PIECE_BYTES, 5], ids=["whole", "pieces"])
def piece_bytes(request):
    return request.param


@dataclass
class Read:
    split: SplitData
    run_dir: str

    @property
    def counts(self):
        return self.split.counts

    @property
    def read(self):
        return self.split.read


def classify(path, piece_bytes=PIECE_BYTES, run_dir=None):
    run_dir = run_dir or f"{path}.run"
    split = classify_split(path, "train", ["source", "target"], run_dir, piece_bytes=piece_bytes)
    assert split.read == split.used + sum(v for k, v in split.counts.items() if k != "ok")
    return Read(split, run_dir)


@pytest.fixture
def read(tmp_path, piece_bytes):
    def read(tmp_path, content: bytes, name="c.csv"):
        path = tmp_path / name
        path.write_bytes(content)
        return classify(str(path), piece_bytes)

    return read


def rejects(tmp_path, result):
    rows = read_rejects(result.run_dir, "train")
    assert len(rows) == result.split.read - result.split.used
    return sorted(rows, key=lambda r: int(r["line"]))


def ok_pairs(result):
    table = read_parts(result.split.parts)
    rows = sorted(table.to_pylist(), key=lambda r: r["line"]) if table is not None else []
    return [(r["source"], r["target"]) for r in rows]


def test_wrong_number_of_fields(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b"a,b\nc,d,e\nlonely\nf,g\n")
    assert split.counts == {"ok": 2, "wrong_field_count": 2}
    assert ok_pairs(split) == [("a", "b"), ("f", "g")]
    bad = rejects(tmp_path, split)
    assert [(r["reason"], r["line"], r["raw"]) for r in bad] == [
        ("wrong_field_count", "3", "c,d,e"),
        ("wrong_field_count", "4", "lonely"),
    ]
    assert all(r["file"].endswith("c.csv") for r in bad)


def test_unterminated_quote_loses_only_its_line(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b'a,b\n"never closed,x\nc,d\ne,f\n')
    assert split.counts == {"ok": 3, "unterminated_quote": 1}
    assert ok_pairs(split) == [("a", "b"), ("c", "d"), ("e", "f")]
    assert rejects(tmp_path, split)[0]["raw"] == '"never closed,x'


def test_unterminated_quote_on_the_last_line(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b'a,b\nc,"open')
    assert split.counts == {"ok": 1, "unterminated_quote": 1}


def test_quoted_fields_with_commas_and_newlines_are_fine(ray_cluster, tmp_path, read):
    split = read(
        tmp_path,
        HEADER
        + b'"Save, then quit","Enregistrer, puis quitter"\n"two\nlines",deux\n"say ""hi""",dis\n',
    )
    assert split.counts == {"ok": 3}
    assert ok_pairs(split) == [
        ("Save, then quit", "Enregistrer, puis quitter"),
        ("two lines", "deux"),
        ('say "hi"', "dis"),
    ]


def test_quote_inside_a_field_is_malformed(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b'"a"b,c\nd,e\n')
    assert split.counts == {"ok": 1, "malformed_csv": 1}


def test_invalid_utf8_row_is_rejected_and_shown_escaped(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b"caf\xe9,latin-1 bytes\ngood,bon\n")
    assert split.counts == {"ok": 1, "invalid_utf8": 1}
    assert rejects(tmp_path, split)[0]["raw"] == "caf\\xe9,latin-1 bytes"


def test_byte_order_mark_and_crlf(ray_cluster, tmp_path, read):
    split = read(
        tmp_path,
        b"\xef\xbb\xbf" + HEADER.replace(b"\n", b"\r\n") + b"Open,Ouvrir\r\nClose,Fermer\r\n",
    )
    assert split.counts == {"ok": 2}
    assert ok_pairs(split) == [("Open", "Ouvrir"), ("Close", "Fermer")]


def test_duplicate_header_from_concatenated_files(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b"a,b\n" + HEADER + b"c,d\n")
    assert split.counts == {"ok": 2, "duplicate_header": 1}
    assert rejects(tmp_path, split)[0]["line"] == "3"


def test_extra_columns_are_ignored_and_order_does_not_matter(ray_cluster, tmp_path, read):
    split = read(tmp_path, b"id,target,note,source\n1,Bonjour,x,Hello\n2,Merci,,Thanks\n")
    assert ok_pairs(split) == [("Hello", "Bonjour"), ("Thanks", "Merci")]


def test_blank_lines_are_counted(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b"a,b\n\n\nc,d\n")
    assert split.counts == {"ok": 2, "blank_line": 2}


def test_empty_sides_numbers_and_booleans(ray_cluster, tmp_path, read):
    split = read(tmp_path, HEADER + b'42,42\ntrue,vrai\n,vide\nsave,\n"   ",blank\n')
    assert split.counts == {"ok": 2, "empty_source": 2, "empty_target": 1}
    assert ok_pairs(split) == [("42", "42"), ("true", "vrai")]


def test_tsv_and_gzip(ray_cluster, tmp_path, read):
    split = read(tmp_path, b"source\ttarget\nOpen\tOuvrir\nbad line\n", name="c.tsv")
    assert split.counts == {"ok": 1, "wrong_field_count": 1}
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        gz.write(HEADER + b"a,b\nc,d,e\n")
    split = read(tmp_path, buf.getvalue(), name="c.csv.gz")
    assert split.counts == {"ok": 1, "wrong_field_count": 1}


def test_tsv_lines_that_start_with_a_quote_are_data(ray_cluster, tmp_path, read):
    """News text often opens with a quote: in TSV that is text, not CSV quoting, and no line
    is lost or merged with the next."""
    content = (
        b"source\ttarget\n"
        b'"I will go," he said.\t\xc2\xab J\'irai \xc2\xbb, dit-il.\n'
        b'"Unclosed\tquote\n'
        b"plain\tline\n"
    )
    split = read(tmp_path, content, name="news.tsv")
    assert split.counts == {"ok": 3}
    pairs = sorted(ok_pairs(split))
    assert pairs == sorted([
        ('"I will go," he said.', "« J'irai », dit-il."),
        ('"Unclosed', "quote"),
        ("plain", "line"),
    ])  # fmt: skip


def test_every_case_in_one_file(ray_cluster, tmp_path, read):
    content = (
        b"\xef\xbb\xbf"
        + HEADER
        + b'a,b\r\nc,d,e\n"open,x\nbad\xff,y\n'
        + HEADER
        + b"\n,empty\n42,true\ng,h\n"
    )
    split = read(tmp_path, content)
    assert split.counts == {
        "ok": 3,
        "wrong_field_count": 1,
        "unterminated_quote": 1,
        "invalid_utf8": 1,
        "duplicate_header": 1,
        "blank_line": 1,
        "empty_source": 1,
    }
    assert split.read == 9 == content.count(b"\n") - 1
    assert sorted(int(r["line"]) for r in rejects(tmp_path, split)) == [3, 4, 5, 6, 7, 8]


def test_header_errors_are_clear(ray_cluster, tmp_path):
    (tmp_path / "blank.csv").write_bytes(b"\n\n")
    with pytest.raises(DataError, match=r"blank\.csv: no header line"):
        classify(str(tmp_path / "blank.csv"))
    (tmp_path / "one.csv").write_bytes(b"source\nx\n")
    with pytest.raises(
        DataError,
        match=r"one\.csv: column\(s\) \['target'\] not found; the file has columns \['source'\]",
    ):
        classify(str(tmp_path / "one.csv"))


def test_no_usable_rows_fails_before_training(ray_cluster, tmp_path):
    from job.pipeline import prepare_data

    bad = tmp_path / "bad.csv"
    bad.write_bytes(HEADER + b",x\nonly one field\n")
    cfg = load_config(
        None,
        tiny_overrides(
            tmp_path, **{"data.train": str(bad), "data.valid": "null", "data.test": "null"}
        ),
    )
    with pytest.raises(
        DataError, match=r"bad\.csv: no usable training rows .*empty_source.*wrong_field_count"
    ):
        prepare_data(cfg, None)


def test_parser_keeps_going_after_a_runaway_quote():
    """A stray quote must not swallow the rest of a large file into one field."""
    body = b'"stray,x\n' + b"".join(b"s%d,t%d\n" % (i, i) for i in range(5000))
    records = list(parse_records(lines_of(io.BytesIO(HEADER + body)), ",", max_record_lines=100))
    assert sum(r[2] is None for r in records) == 5000
    assert [r[2] for r in records if r[2] not in (None, "header")] == ["unterminated_quote"]
