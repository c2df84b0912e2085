"""The pure-Python parts of job.corpus.parsers: line splitting, record parsing and header reading.

CorpusDatasource itself is not tested here: constructing it (Ray's FileBasedDatasource) calls
ray.put and so starts a local Ray cluster; test_bad_input.py covers it on a real cluster.
"""

import io

import pyarrow as pa
import pytest

from job.corpus.parsers import (
    ReaderError,
    dialect,
    lines_of,
    parse_records,
    parse_text_lines,
    read_header,
)


def records(data: bytes, delimiter: str = ",", **kw) -> list[tuple]:
    return list(parse_records(lines_of(io.BytesIO(data)), delimiter, "c.csv", **kw))


def text_records(data: bytes) -> list[tuple]:
    return list(parse_text_lines(lines_of(io.BytesIO(data))))


HEADER = (1, ["source", "target"], "header", None)


# lines_of


def test_lines_of_splits_on_newline_only():
    """CR, VT, NEL and U+2028 are not line ends here (str.splitlines would split on them)."""
    data = "a\r\nb\rc\x0bd\x85e\u2028f\ng".encode("utf-8")
    assert list(lines_of(io.BytesIO(data))) == ["a\r\n", "b\rc\x0bd\x85e\u2028f\n", "g"]


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", []),
        (b"\n", ["\n"]),
        (b"a\nb\n", ["a\n", "b\n"]),
        (b"a\nb", ["a\n", "b"]),
        (b"\n\nx", ["\n", "\n", "x"]),
    ],
)
def test_lines_of_line_ends(data, expected):
    assert list(lines_of(io.BytesIO(data))) == expected


def test_lines_of_keeps_undecodable_bytes_as_surrogates():
    data = b"ok\n\xff\xfebad\n\xc3(\n"
    lines = list(lines_of(io.BytesIO(data)))
    assert lines == ["ok\n", "\udcff\udcfebad\n", "\udcc3(\n"]
    assert "".join(lines).encode("utf-8", "surrogateescape") == data


# é (2 bytes), € (3), 😀 (4), a stray continuation byte, a truncated € at the very end.
MIXED = "é€😀\n".encode() + b"x\x80y\n" + "€\n".encode() + b"tail\xe2\x82"
MIXED_LINES = ["é€😀\n", "x\udc80y\n", "€\n", "tail\udce2\udc82"]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 1 << 20])
def test_lines_of_chunk_boundaries_inside_characters(chunk_bytes):
    assert list(lines_of(io.BytesIO(MIXED), chunk_bytes=chunk_bytes)) == MIXED_LINES


def test_lines_of_reads_pyarrow_streams():
    assert list(lines_of(pa.BufferReader(MIXED), chunk_bytes=2)) == MIXED_LINES


# parse_records


def test_header_then_fields_as_text():
    assert records(b"source,target\n42,true\n") == [HEADER, (2, ["42", "true"], None, None)]


def test_header_names_are_stripped():
    assert records(b" source , target \na,b\n")[0] == HEADER


def test_tab_delimiter():
    data = b"source\ttarget\na, b\tc,d\n"
    assert records(data, "\t") == [HEADER, (2, ["a, b", "c,d"], None, None)]


def test_quoted_multiline_field_is_one_record():
    """The record's line is its first physical line; the next record's line counts both."""
    data = b'source,target\na,b\n"multi\nline",c\nd,e\n'
    assert records(data) == [
        HEADER,
        (2, ["a", "b"], None, None),
        (3, ["multi\nline", "c"], None, None),
        (5, ["d", "e"], None, None),
    ]


def test_quoted_field_with_delimiter_and_escaped_quote():
    data = b'source,target\n"a, b","say ""hi"""\n'
    assert records(data) == [HEADER, (2, ["a, b", 'say "hi"'], None, None)]


def test_stray_quote_rejects_only_its_line():
    data = b'source,target\na,"oops\nb,c\nd,e\n'
    assert records(data) == [
        HEADER,
        (2, None, "unterminated_quote", 'a,"oops'),
        (3, ["b", "c"], None, None),
        (4, ["d", "e"], None, None),
    ]


def test_stray_quote_on_last_line():
    data = b'source,target\na,b\nc,"oops\n'
    assert records(data) == [
        HEADER,
        (2, ["a", "b"], None, None),
        (3, None, "unterminated_quote", 'c,"oops'),
    ]


def test_multiline_record_with_wrong_field_count_rejects_first_line():
    """A record spanning lines with the wrong field count is treated as a stray quote."""
    data = b'source,target\n"only one\nfield"\nb,c\n'
    assert records(data) == [
        HEADER,
        (2, None, "unterminated_quote", '"only one'),
        (3, None, "wrong_field_count", 'field"'),
        (4, ["b", "c"], None, None),
    ]


def test_max_record_lines_stops_reading_ahead():
    """An open quote reads at most max_record_lines lines before its first line is rejected."""
    pulled = []

    def source():
        yield "source,target\n"
        yield 'a,"oops\n'
        for i in range(1000):
            pulled.append(i)
            yield f"r{i},s{i}\n"

    parsed = parse_records(source(), ",", "c.csv", max_record_lines=3)
    assert next(parsed) == HEADER
    assert next(parsed) == (2, None, "unterminated_quote", 'a,"oops')
    assert len(pulled) == 2  # r0 and r1 joined the open record, then the cap stopped it
    assert next(parsed) == (3, ["r0", "s0"], None, None)
    assert len(list(parsed)) == 999


def test_max_record_lines_also_limits_good_records():
    data = b'source,target\na,"ok\nfine"\nb,c\n'
    assert records(data, max_record_lines=2)[1] == (2, ["a", "ok\nfine"], None, None)
    assert records(data, max_record_lines=1) == [
        HEADER,
        (2, None, "unterminated_quote", 'a,"ok'),
        (3, None, "wrong_field_count", 'fine"'),
        (4, ["b", "c"], None, None),
    ]


def test_wrong_field_count():
    data = b"source,target\nc,d,e\nlonely\nf,g\n"
    assert records(data) == [
        HEADER,
        (2, None, "wrong_field_count", "c,d,e"),
        (3, None, "wrong_field_count", "lonely"),
        (4, ["f", "g"], None, None),
    ]


def test_duplicate_header():
    data = b"source,target\na,b\nsource,target\n source , target \nc,d\n"
    assert records(data) == [
        HEADER,
        (2, ["a", "b"], None, None),
        (3, None, "duplicate_header", "source,target"),
        (4, None, "duplicate_header", " source , target "),
        (5, ["c", "d"], None, None),
    ]


def test_blank_lines_before_and_after_header():
    data = b"\n , \nsource,target\n\na,b\n\r\n"
    assert records(data) == [
        (1, None, "blank_line", ""),
        (2, None, "blank_line", " , "),
        (3, ["source", "target"], "header", None),
        (4, None, "blank_line", ""),
        (5, ["a", "b"], None, None),
        (6, None, "blank_line", ""),
    ]


def test_invalid_utf8_row_is_rejected_and_shown_as_escapes():
    data = b"source,target\n\xff,b\ncaf\xc3\xa9,d\n"
    assert records(data) == [
        HEADER,
        (2, None, "invalid_utf8", "\\xff,b"),
        (3, ["café", "d"], None, None),
    ]


def test_invalid_utf8_header_is_an_error():
    with pytest.raises(ReaderError, match=r"c\.csv: line 2: the header is not valid UTF-8"):
        records(b"\nso\xffurce,target\na,b\n")


def test_bom_and_crlf_accepted_silently():
    data = b'\xef\xbb\xbfsource,target\r\na,b\r\n"x\r\ny",z\r\n'
    assert records(data) == [
        HEADER,
        (2, ["a", "b"], None, None),
        (3, ["x\r\ny", "z"], None, None),
    ]


def test_bom_not_shown_in_rejected_first_line():
    data = b"\xef\xbb\xbf\nsource,target\na,b\n"
    assert records(data) == [
        (1, None, "blank_line", ""),
        (2, ["source", "target"], "header", None),
        (3, ["a", "b"], None, None),
    ]


def test_malformed_csv():
    """Text after a closing quote is a csv error; rows around it survive."""
    data = b'source,target\na,b\nx,"y"z\nc,d\n'
    assert records(data) == [
        HEADER,
        (2, ["a", "b"], None, None),
        (3, None, "malformed_csv", 'x,"y"z'),
        (4, ["c", "d"], None, None),
    ]


def test_every_physical_line_is_accounted_for():
    data = (
        b'\xef\xbb\xbfsource,target\r\n\na,b\nc,"oops\n"m\nl",x\nsource,target\n'
        b'\xfe,y\n1,2,3\nx,"y"z\nlast,row'
    )
    lines = [r[0] for r in records(data)]
    assert lines == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    reasons = [r[2] for r in records(data)]
    assert reasons == [
        "header",
        "blank_line",
        None,
        "unterminated_quote",
        None,
        "duplicate_header",
        "invalid_utf8",
        "wrong_field_count",
        "malformed_csv",
        None,
    ]


# parse_text_lines


def test_text_lines():
    """One row per physical line (blank ones included); BOM and CR/LF stripped."""
    data = b"\xef\xbb\xbfHello\r\n\nbad \xff byte\n\xef\xbb\xbfkept bom\nlast"
    assert text_records(data) == [
        (1, ["Hello"], None, None),
        (2, [""], None, None),
        (3, None, "invalid_utf8", "bad \\xff byte"),
        (4, ["\ufeffkept bom"], None, None),
        (5, ["last"], None, None),
    ]


def test_text_lines_keep_commas_and_quotes():
    assert text_records(b'a, "b\nc\n') == [(1, ['a, "b'], None, None), (2, ["c"], None, None)]


# read_header


@pytest.mark.parametrize(
    "fmt, data",
    [
        ("csv", b"\n\n source ,target\na,b\n"),
        ("tsv", b"\xef\xbb\xbfsource\ttarget\r\na\tb\r\n"),
    ],
)
def test_read_header(fmt, data):
    assert read_header(io.BytesIO(data), fmt, "f") == ["source", "target"]


def test_read_header_tsv_does_not_split_on_commas():
    assert read_header(io.BytesIO(b"a,b\tc\n"), "tsv", "f") == ["a,b", "c"]
    assert read_header(io.BytesIO(b"a,b\tc\n"), "csv", "f") == ["a", "b\tc"]


@pytest.mark.parametrize("data", [b"", b"\n\n\r\n", b" , \n\n"])
def test_read_header_of_blank_file_is_an_error(data):
    with pytest.raises(ReaderError, match=r"^data/x\.csv: no header line"):
        read_header(io.BytesIO(data), "csv", "data/x.csv")


def test_read_header_invalid_utf8_is_an_error():
    with pytest.raises(ReaderError, match="not valid UTF-8"):
        read_header(io.BytesIO(b"\xffsource,target\n"), "csv", "x.csv")


def test_read_header_reads_only_the_start():
    data = b"source,target\n" + b"a,b\n" * 100_000
    f = io.BytesIO(data)
    assert read_header(f, "csv", "big.csv") == ["source", "target"]
    assert f.tell() < len(data) // 2


def test_tsv_quotes_are_text_and_every_line_is_one_record():
    """TSV: split on tabs only. A line that starts with a quote (common in news text), a quote
    that never closes, or a quote mid-field is data, not CSV quoting."""
    data = (
        b"source\ttarget\n"
        b'"Quoted" start\t\xc2\xab Guillemets \xc2\xbb\n'
        b'"open only\ty\n'
        b'mid "quote\tx\n'
        b"a\tb\tc\n"
        b'last\t"\n'
    )
    got = list(parse_records(lines_of(io.BytesIO(data)), **dialect("tsv")))
    assert got == [
        (1, ["source", "target"], "header", None),
        (2, ['"Quoted" start', "« Guillemets »"], None, None),
        (3, ['"open only', "y"], None, None),
        (4, ['mid "quote', "x"], None, None),
        (5, None, "wrong_field_count", "a\tb\tc"),
        (6, ["last", '"'], None, None),
    ]


def test_csv_keeps_rfc4180_quoting():
    data = b'source,target\n"a, b","say ""hi"""\n'
    got = list(parse_records(lines_of(io.BytesIO(data)), **dialect("csv")))
    assert got[1] == (2, ["a, b", 'say "hi"'], None, None)
