"""The one record reader (``tmzoo.io.records``): every record out, in order, bounded, streamed.

Each test of a reported bug (issue 11, input files) names it; they failed on the reader that
read ``.smi`` whole, split it with ``str.splitlines`` and trusted ``$$$$`` and gzip blindly.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmzoo.io import records as records_module
from tmzoo.io.files import DamagedInputError
from tmzoo.io.records import block_name, count_records, count_sdf_records, iter_sdf_blocks, read_records


def molblock(name: str, atoms=(("C", 0.0), ("C", 1.5), ("O", 2.1)), hydrogens: int = 0, data: str = "") -> str:
    """A V2000 record (no ``$$$$``): a chain of ``atoms``, then ``hydrogens`` H on the first atom."""
    rows = [(symbol, x) for symbol, x in atoms] + [("H", -1.0 - k) for k in range(hydrogens)]
    bonds = [(i, i + 1) for i in range(1, len(atoms))] + [(1, len(atoms) + k + 1) for k in range(hydrogens)]
    lines = [name, "     RDKit          3D", "", f"{len(rows):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000"]
    lines += [f"{x:10.4f}{0.5 * k:10.4f}{0.0:10.4f} {s:<3} 0  0  0  0  0  0  0  0  0  0  0  0"
              for k, (s, x) in enumerate(rows)]
    lines += [f"{i:3d}{j:3d}  1  0" for i, j in bonds]
    lines.append("M  END")
    if data:
        lines += ["> <note>", data, ""]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str | bytes, compress: bool = False) -> Path:
    raw = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def summary(records) -> list[tuple[int, str, bool]]:
    return [(r.index, r.name, r.mol is not None) for r in records]


def truncated_gzip(raw: bytes) -> tuple[bytes, bytes]:
    """A gzip of ``raw`` cut in the middle, and the text that can still be decompressed."""
    packed = gzip.compress(raw)[: len(gzip.compress(raw)) // 2]
    readable = zlib.decompressobj(wbits=31).decompress(packed)
    assert 0 < len(readable) < len(raw)
    return packed, readable


def read_until_damage(path: Path) -> tuple[list, DamagedInputError]:
    records = []
    with pytest.raises(DamagedInputError) as caught:
        for record in read_records(path):
            records.append(record)
    return records, caught.value


# ----------------------------------------------------------- damaged compressed files
def test_truncated_gzip_smi_yields_the_lines_before_the_damage_then_names_the_file(tmp_path):
    """Bug: an uncaught ``EOFError`` and no record at all."""
    raw = "".join(f"CC{'C' * (i % 5)}O mol{i}\n" for i in range(20_000)).encode()
    packed, readable = truncated_gzip(raw)
    path = write(tmp_path / "cut.smi.gz", packed)
    records, err = read_until_damage(path)
    assert len(records) == readable.count(b"\n")  # every complete line; the cut one is no record
    assert [r.name for r in records] == [f"mol{i}" for i in range(len(records))]
    assert all(r.mol is not None for r in records)
    assert str(path) in str(err) and "truncated or corrupt" in str(err)


def test_truncated_gzip_csv_and_sdf(tmp_path):
    raw_csv = ("smiles,name\n" + "".join(f"CC{'N' * (i % 3)}O,m{i}\n" for i in range(20_000))).encode()
    packed, readable = truncated_gzip(raw_csv)
    records, err = read_until_damage(write(tmp_path / "cut.csv.gz", packed))
    assert len(records) == readable.count(b"\n") - 1 and records[-1].name == f"m{len(records) - 1}"

    raw_sdf = "".join(molblock(f"m{i}") + "$$$$\n" for i in range(3_000)).encode()
    packed, readable = truncated_gzip(raw_sdf)
    records, err = read_until_damage(write(tmp_path / "cut.sdf.gz", packed))
    assert len(records) == readable.count(b"$$$$") and all(r.mol is not None for r in records)
    assert "cut.sdf.gz" in str(err)


def test_corrupt_gzip_is_a_damaged_input(tmp_path):
    packed = bytearray(gzip.compress("".join(f"C{'C' * (i % 7)} m{i}\n" for i in range(50_000)).encode()))
    packed[len(packed) // 2] ^= 0xFF
    path = write(tmp_path / "flipped.smi.gz", bytes(packed))
    records, err = read_until_damage(path)
    assert str(path) in str(err)
    assert [r.index for r in records] == list(range(len(records)))


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    text = "CCO a\nC1CC b\nO c\n"
    expected = [(0, "a", True), (1, "b", False), (2, "c", True)]
    assert summary(read_records(write(tmp_path / "packed.smi", text, compress=True))) == expected
    assert summary(read_records(write(tmp_path / "plain.smi.gz", text))) == expected


# ----------------------------------------------------------------------------- CSV
def test_csv_field_over_the_csv_module_limit_is_one_record_error(tmp_path):
    """Bug: one field over 131,072 characters (``_csv.Error``) lost the whole file."""
    text = "name,smiles\na,CCO\nhuge," + "C" * 140_000 + "\nc,CCN\nd," + "C" * 100_001 + "\ne,O\n"
    records = list(read_records(write(tmp_path / "big.csv", text)))
    assert summary(records) == [(0, "a", True), (1, "huge", False), (2, "c", True), (3, "d", False),
                                (4, "e", True)]
    assert "140,000 characters exceeds the limit of 100,000" in records[1].error
    assert "line 3" in records[1].error and records[1].smiles == ""
    smaller = list(read_records(tmp_path / "big.csv", max_field_chars=200_000))
    assert [r.mol is not None for r in smaller] == [True] * 5


@pytest.mark.parametrize("field", ["c1ccccc1 CCCCCC", '"c1ccccc1\nCCCCCC"', "c1ccccc1\tCCCCCC", "CC\u2028O"])
def test_csv_smiles_with_whitespace_inside_is_refused(tmp_path, field):
    """Bug: ``c1ccccc1 CCCCCC`` was silently predicted from its prefix (benzene)."""
    records = list(read_records(write(tmp_path / "ws.csv", f"smiles,name\nCCO,a\n{field},b\n  CCN  ,c\n")))
    assert summary(records) == [(0, "a", True), (1, "b", False), (2, "c", True)]
    assert "whitespace" in records[1].error or "line break" in records[1].error
    assert records[2].smiles == "CCN"


def test_csv_unclosed_quote_is_reported_with_its_lines(tmp_path):
    text = 'smiles,name\nCCO,a\nCCN,"b\nCCC,c\nCCCC,d\n'
    records = list(read_records(write(tmp_path / "quote.csv", text)))
    assert summary(records) == [(0, "a", True), (1, "1", False)]
    assert records[1].error.startswith("lines 3-5: field 'name' holds a line break")


def test_csv_record_that_never_ends_stops_the_file_after_the_rows_before(tmp_path):
    text = 'smiles,name\nCCO,a\nCCN,"b\n' + "x\n" * 3_000
    records = []
    with pytest.raises(DamagedInputError, match="unclosed quote"):
        for record in read_records(write(tmp_path / "open.csv", text), max_record_bytes=1_000):
            records.append(record)
    assert summary(records) == [(0, "a", True)]


def test_csv_header_and_rows(tmp_path):
    text = "\ufeffID,Smiles,extra\r\nm1,CCO,x\r\n\r\nm2,C1CC\r\nm3\r\n"
    records = list(read_records(write(tmp_path / "rows.csv", text)))
    assert summary(records) == [(0, "m1", True), (1, "m2", False), (2, "m3", False)]
    assert records[2].error == "empty SMILES"
    with pytest.raises(ValueError, match="needs a 'smiles' column"):
        list(read_records(write(tmp_path / "nosmiles.csv", "name,structure\na,CCO\n")))


# ----------------------------------------------------------------------------- .smi
@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\x0c", "\x1c", "\u2029", "\x0b"])
def test_smi_line_separators_inside_names_invent_no_records(tmp_path, separator):
    """Bug: ``str.splitlines`` cut lines at U+2028, U+0085, ``\\x0c``, ``\\x1c``: extra records.
    (A ``\\r`` inside a line is an error record: see test_review_io.py.)"""
    text = f"CCO eth{separator}anol\nCCN amine\n"
    records = list(read_records(write(tmp_path / "sep.smi", text)))
    assert summary(records) == [(0, f"eth{separator}anol", True), (1, "amine", True)]


def test_smi_is_streamed_in_bounded_memory(tmp_path):
    """Bug: ``.smi`` was read whole (a 700 KB ``.gz`` took 1.5 GB)."""
    raw = b"CCO first\n" + b"C" * 60_000_000 + b" long\n" + b"CCN last\n"
    path = write(tmp_path / "long.smi.gz", raw, compress=True)
    tracemalloc.start()
    try:
        records = list(read_records(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30_000_000, f"peak {peak:,} bytes for a 60 MB line"
    assert summary(records) == [(0, "first", True), (1, "1", False), (2, "last", True)]
    assert "line 2 is over" in records[1].error


def test_smi_field_bound(tmp_path):
    records = list(read_records(write(tmp_path / "f.smi", "C" * 50 + " a\nCCO b\n"), max_field_chars=20))
    assert summary(records) == [(0, "a", False), (1, "b", True)]
    assert "50 characters exceeds the limit of 20" in records[0].error


# ----------------------------------------------------------------------------- SDF
def test_sdf_missing_terminator_is_an_error_record_not_a_merge(tmp_path):
    """Bug: an SDF missing one ``$$$$`` silently merged two records into one."""
    text = molblock("a") + "$$$$\n" + molblock("b", data="x") + molblock("c") + "$$$$\n" + molblock("d") + "$$$$\n"
    path = write(tmp_path / "merged.sdf", text)
    records = list(read_records(path))
    assert summary(records) == [(0, "a", True), (1, "b", False), (2, "c", True), (3, "d", True)]
    assert "no $$$$ line after this record" in records[1].error
    assert count_sdf_records(path) == len(records) == len(list(iter_sdf_blocks(path)))


def test_sdf_truncated_record_followed_by_a_record_is_split(tmp_path):
    cut = "\n".join(molblock("a").splitlines()[:6]) + "\n"  # header, counts and two atoms
    path = write(tmp_path / "cut.sdf", cut + molblock("b") + "$$$$\n")
    records = list(read_records(path))
    assert summary(records) == [(0, "a", False), (1, "b", True)]
    assert "the next record starts at line 7" in records[0].error


def test_sdf_two_molecule_ends_without_counts_lines_are_one_error(tmp_path):
    old_style = molblock("a").replace(" V2000", "      ")
    records = list(read_records(write(tmp_path / "old.sdf", old_style + old_style + "$$$$\n")))
    assert len(records) == 1 and "2 'M  END' lines" in records[0].error


def test_sdf_oversized_record_is_an_error_and_reading_goes_on(tmp_path):
    huge = molblock("huge", data="x" * 5_000)
    text = molblock("a") + "$$$$\n" + huge + "$$$$\n" + molblock("b")
    for limit in (2_000, 200):  # record larger than the limit; limit smaller than one record
        records = list(read_records(write(tmp_path / "big.sdf", text), max_record_bytes=limit))
        assert [r.index for r in records] == [0, 1, 2]
        assert "over" in records[1].error and records[1].name == "huge"
    records = list(read_records(tmp_path / "big.sdf", max_record_bytes=2_000))
    assert summary(records) == [(0, "a", True), (1, "huge", False), (2, "b", True)]


def test_sdf_record_count_is_the_terminator_count(tmp_path):
    blocks = [molblock(f"m{i}") for i in range(7)]
    text = "$$$$\n" + "$$$$\n".join(blocks) + "$$$$\n"
    path = write(tmp_path / "n.sdf", text)
    assert count_sdf_records(path) == text.count("$$$$") == len(list(read_records(path)))
    unterminated = write(tmp_path / "last.sdf", text + molblock("tail"))
    assert count_sdf_records(unterminated) == text.count("$$$$") + 1
    assert [block_name(b) for b in iter_sdf_blocks(unterminated)][-1] == "tail"


def test_sdf_and_sdf_gz_give_the_same_records(tmp_path):
    text = "$$$$\n" + molblock("a", hydrogens=2) + "$$$$\n" + molblock("bad", atoms=(("C", 0.0), ("Xx", 1.0)))
    text += "$$$$\n" + molblock("b").replace("\n", "\r\n") + "$$$$\r\n" + molblock("c")
    plain = list(read_records(write(tmp_path / "r.sdf", text)))
    packed = list(read_records(write(tmp_path / "r.sdf.gz", text, compress=True)))
    assert summary(plain) == summary(packed) == [(0, "0", False), (1, "a", True), (2, "bad", False),
                                                 (3, "b", True), (4, "c", True)]
    assert [(r.smiles, r.error) for r in plain] == [(r.smiles, r.error) for r in packed]
    blocks = list(iter_sdf_blocks(tmp_path / "r.sdf.gz"))
    assert "\r" not in "".join(blocks) and [b.line for b in blocks] == [1, 2, 17, 26, 37]


def test_sdf_keeps_explicit_hydrogens_and_reports_smiles_without_them(tmp_path):
    records = list(read_records(write(tmp_path / "h.sdf", molblock("ethanol", hydrogens=3) + "$$$$\n")))
    assert records[0].mol.GetNumAtoms() == 6
    assert records[0].smiles == "CCO"


def test_sdf_byte_order_mark_and_terminator_rules(tmp_path):
    """A BOM is not part of the first title; only a line starting with ``$$$$`` ends a record."""
    text = "\ufeff" + molblock("a") + "$$$$ trailing words\n" + molblock("b") + " $$$$\n" + molblock("c")
    records = list(read_records(write(tmp_path / "t.sdf", text)))
    assert summary(records) == [(0, "a", True), (1, "b", False), (2, "c", True)]


def test_datamodule_readers_are_the_io_implementation():
    from tmzoo.datamodules import readers
    from tmzoo.io import files, records

    assert readers.iter_sdf_blocks is records.iter_sdf_blocks
    assert readers.count_sdf_records is records.count_sdf_records
    assert readers.block_name is records.block_name
    assert readers.open_text is files.open_text and readers.find_file is files.find_file


# ----------------------------------------------------------------------------- fuzz
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PIECES = [molblock("m"), "$$$$\n", "$$$$", "\n", "M  END\n", "> <p>\n1\n\n", "\r\n", "\u2028", "\x00",
          "  3  2  0  0  0  0  0  0  0  0999 V2000\n", "CCO x\n", "SMILES x\n", "\xff", "\ufeff", "\"", ",", " "]


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.sampled_from([".sdf", ".smi", ".csv"]),
       st.booleans(), st.sampled_from([60, 10_000]))
def test_any_text_gives_numbered_records_and_consistent_counts(tmp_path_factory, pieces, kind, compress, limit):
    text = "".join(pieces)
    if kind == ".csv":
        text = "smiles,name\n" + text
    path = write(tmp_path_factory.mktemp("fuzz") / f"f{kind}", text, compress)
    try:
        records = list(read_records(path, max_record_bytes=limit))
    except DamagedInputError:  # only an unclosed CSV quote over the bound may stop a file
        assert kind == ".csv" and '"' in text
        return
    assert [r.index for r in records] == list(range(len(records)))
    assert all((r.mol is None) == bool(r.error) for r in records)
    assert count_records(path, max_record_bytes=limit) == len(records)
    if kind == ".sdf":
        assert count_sdf_records(path, limit) == len(records) == len(list(iter_sdf_blocks(path, limit)))
        assert len(records) >= text.count("\n$$$$") + text.startswith("$$$$")


# ----------------------------------------------------------------------------- API
@pytest.mark.parametrize("kind", [".sdf", ".smi", ".csv"])
def test_select_parses_only_the_chosen_records_keeping_their_indices(tmp_path, kind):
    molecules = ["CCO", "C1CC", "", "c1ccccc1", "CCN", "O"]
    if kind == ".sdf":
        text = "".join(molblock(f"m{i}") + "$$$$\n" if s else "$$$$\n" for i, s in enumerate(molecules))
    elif kind == ".smi":
        text = "smiles name\n" + "".join(f"{s} m{i}\n" if s else "\n" for i, s in enumerate(molecules))
    else:
        text = "smiles,name\n" + "".join(f"{s},m{i}\n" for i, s in enumerate(molecules))
    path = write(tmp_path / f"in{kind}", text)
    every = summary(read_records(path))
    assert len(every) == len(molecules) == count_records(path)
    chosen = summary(read_records(path, select=lambda index: index % 2 == 1))
    assert chosen == every[1::2]


def test_fields_are_the_csv_row_or_the_sd_data_items(tmp_path):
    rows = list(read_records(write(tmp_path / "p.csv", "smiles,name,gap\nCCO,a,1.5\nCCN,b,\n")))
    assert [r.fields for r in rows] == [{"smiles": "CCO", "name": "a", "gap": "1.5"},
                                       {"smiles": "CCN", "name": "b", "gap": ""}]
    block = molblock("a") + ">  <gap>  (1)\n1.5\n\n> <note>\nline one\nline two\n\n> <empty>\n\n$$$$\n"
    records = list(read_records(write(tmp_path / "p.sdf", block + molblock("b") + "> <gap>\n2.0\n")))
    assert [r.fields for r in records] == [{"gap": "1.5", "note": "line one\nline two", "empty": ""},
                                          {"gap": "2.0"}]


@FUZZ
@given(st.sampled_from([".sdf", ".smi", ".csv"]), st.floats(0.0, 0.99))
def test_a_gzip_cut_anywhere_yields_a_prefix_of_the_records_then_an_error(tmp_path_factory, kind, where):
    rows = [("CCO", "a"), ("C1CC", "b"), ("", "c"), ("c1ccccc1", "d"), ("N", "e")] * 40
    if kind == ".sdf":
        text = "".join((molblock(n) if s else "") + "$$$$\n" for s, n in rows)
    elif kind == ".smi":
        text = "".join(f"{s} {n}\n" for s, n in rows)
    else:
        text = "smiles,name\n" + "".join(f"{s},{n}\n" for s, n in rows)
    folder = tmp_path_factory.mktemp("cut")
    whole = summary(read_records(write(folder / f"whole{kind}", text)))
    packed = gzip.compress(text.encode())
    cut = write(folder / f"cut{kind}.gz", packed[: max(10, int(len(packed) * where))])  # header kept
    records = []
    with pytest.raises(DamagedInputError, match="truncated or corrupt"):
        for record in read_records(cut):
            records.append(record)
    assert summary(records) == whole[: len(records)]


@pytest.mark.parametrize("chunk", [1, 4, 5, 7, 64])
def test_chunk_boundaries_do_not_change_the_framing(tmp_path, monkeypatch, chunk):
    text = ("$$$$\n" + molblock("a") + "$$$$ x\n" + molblock("b", data="v") + molblock("c") + "$$$$\r\n"
            + molblock("big", data="y" * 1_200) + "$$$$\n\n" + molblock("d") + "$$$$")
    sdf, smi = write(tmp_path / "f.sdf", text), write(tmp_path / "f.smi", "CCO a\n" + "C" * 300 + " long\n\nN b")

    def framing():
        blocks = list(iter_sdf_blocks(sdf, 1_000))
        return blocks, [(b.line, b.error) for b in blocks], summary(read_records(smi, max_record_bytes=200))

    expected = framing()
    assert [line for line, _ in expected[1]] == [1, 2, 13, 26, 37, 51]
    assert [bool(error) for _, error in expected[1]] == [False, False, True, False, True, False]
    assert expected[2] == [(0, "a", True), (1, "1", False), (2, "2", False), (3, "b", True)]
    monkeypatch.setattr(records_module, "_CHUNK", chunk)
    assert framing() == expected
