"""Review of the record reader and output helpers (issue 11): inputs an unlucky user has."""

from __future__ import annotations

import gzip
import os

import pytest

from tmzoo.io.files import atomic_write, check_output
from tmzoo.io.records import count_records, read_records


def _rows(path):
    return [(r.index, r.name, r.smiles, bool(r.error)) for r in read_records(path)]


@pytest.mark.parametrize("content", [b"CCO a\rCCN b\r", b"CCO\rCCN\r"])
def test_smi_with_carriage_return_line_ends_merges_no_records_silently(tmp_path, content):
    """Old-Mac ``\\r`` line ends are not line ends here: the line is an error, not 'CCO' named 'CCN'."""
    path = tmp_path / "mac.smi"
    path.write_bytes(content + b"\nCCC c\n")
    records = list(read_records(path))
    assert [r.index for r in records] == [0, 1] and count_records(path) == 2
    assert records[0].mol is None and "carriage return" in records[0].error
    assert (records[1].name, records[1].smiles, records[1].error) == ("c", "CCC", "")


def test_smi_crlf_bom_and_blank_lines(tmp_path):
    path = tmp_path / "win.smi"
    path.write_bytes(b"\xef\xbb\xbfCCO a\r\nCCN b\r\n\r\nCCC c\r\n\r\n")
    assert _rows(path) == [(0, "a", "CCO", False), (1, "b", "CCN", False), (2, "2", "", True), (3, "c", "CCC", False)]


def test_empty_and_concatenated_gzip(tmp_path):
    empty = tmp_path / "empty.smi.gz"
    empty.write_bytes(gzip.compress(b""))
    assert _rows(empty) == [] and count_records(empty) == 0
    multi = tmp_path / "multi.smi.gz"
    multi.write_bytes(gzip.compress(b"CCO a\nCC") + gzip.compress(b"N b\n"))  # a line across members
    assert _rows(multi) == [(0, "a", "CCO", False), (1, "b", "CCN", False)]


def test_csv_names_with_commas_quotes_and_crlf(tmp_path):
    path = tmp_path / "names.csv"
    path.write_bytes(b'\xef\xbb\xbfSMILES,Name\r\nCCO,"a, b"\r\nCCN,"say ""hi"""\r\n')
    assert _rows(path) == [(0, "a, b", "CCO", False), (1, 'say "hi"', "CCN", False)]


def test_check_output_sees_hard_links_and_relative_paths(tmp_path, monkeypatch):
    source = tmp_path / "in.csv"
    source.write_text("smiles\nC\n")
    os.link(source, tmp_path / "hard.csv")
    monkeypatch.chdir(tmp_path)
    for output in ("hard.csv", "./in.csv", "../" + tmp_path.name + "/in.csv"):
        with pytest.raises(ValueError, match="is the input"):
            check_output(output, source)
    assert check_output("new.csv", "in.csv").name == "new.csv"


def test_atomic_write_leaves_no_temporary_when_the_caller_stops_early(tmp_path):
    target = tmp_path / "out.csv"

    def rows():
        with atomic_write(target) as handle:
            for k in range(3):
                handle.write(f"{k}\n")
                yield k

    generator = rows()
    next(generator)
    generator.close()  # GeneratorExit inside the with: nothing written, nothing left behind
    assert os.listdir(tmp_path) == []
