"""``tmzoo infer`` on awkward inputs: one row per record, in order, errors per record, exit 0.

Complements ``test_infer.py`` (the lead's end-to-end tests) with edge cases: blank lines,
CRLF, headers, NUL bytes, gzip, SDF records without a coordinate block or with NaN
coordinates, empty SDF records, 3D asked without coordinates, atom limits, exotic
elements, degenerate geometry, and refused checkpoints (no traceback, no output written).
"""

from __future__ import annotations

import csv
import gzip
import math
import os

import pytest
import torch

from tmzoo.cli.main import main


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def infer(ckpt, tmp_path, name: str, content: bytes, *extra: str):
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / f"{name}.csv"
    rc = main(["infer", "--checkpoint", ckpt, "--input", str(source), "--output", str(out), "--quiet", *extra])
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    for row in rows:  # exactly one of prediction / error
        assert bool(row["prediction"]) != bool(row["error"]), row
        if row["prediction"]:
            assert math.isfinite(float(row["prediction"])) and row["mode"] in ("2d", "3d", "2d3d")
        else:
            assert row["mode"] == ""
    return rc, rows


def predicted(rows):
    return [bool(r["prediction"]) for r in rows]


# ----------------------------------------------------------------- SMILES files
def test_blank_lines_crlf_and_header(ckpt, tmp_path):
    content = b"SMILES Name\r\nCCO ethanol\r\n\r\n   \r\nXX bad\r\nc1ccccc1 benzene\r\n\r\n\r\n"
    rc, rows = infer(ckpt, tmp_path, "in.smi", content)
    assert rc == 0
    assert [r["name"] for r in rows] == ["ethanol", "1", "2", "bad", "benzene"]  # trailing blanks: no rows
    assert predicted(rows) == [True, False, False, False, True]
    assert rows[1]["error"] == rows[2]["error"] == "empty SMILES"
    assert "RDKit cannot parse SMILES 'XX'" in rows[3]["error"]


@pytest.mark.parametrize("content", [b"", b"\n\n\n", b"smiles\n"])
def test_input_without_records_writes_a_header_only(ckpt, tmp_path, content):
    rc, rows = infer(ckpt, tmp_path, "empty.smi", content)
    assert rc == 0 and rows == []


def test_nul_bytes_and_invalid_utf8_stay_with_their_record(ckpt, tmp_path):
    content = b"CCO\x00OO first\nCC\xff\xfeO second\nCC third\n"
    rc, rows = infer(ckpt, tmp_path, "odd.smi", content)
    assert rc == 0
    assert predicted(rows) == [False, False, True]
    assert "NUL" in rows[0]["error"]  # not silently read as "CCO"
    assert "cannot parse" in rows[1]["error"]


@pytest.mark.parametrize("suffix", [".csv", ".smi", ".csv.gz"])
def test_byte_order_mark_is_not_part_of_the_first_field(ckpt, tmp_path, suffix):
    """Excel's "CSV UTF-8" starts with a BOM; it used to hide the 'smiles' header."""
    text = "\ufeffsmiles,name\nCCO,ethanol\nC1CC,bad\n" if ".csv" in suffix else "\ufeffCCO ethanol\n"
    raw = text.encode("utf-8")
    rc, rows = infer(ckpt, tmp_path, f"bom{suffix}", gzip.compress(raw) if suffix.endswith(".gz") else raw)
    assert rc == 0
    assert rows[0]["smiles"] == "CCO" and rows[0]["name"] == "ethanol" and rows[0]["prediction"]


def test_gzipped_input(ckpt, tmp_path):
    rc, rows = infer(ckpt, tmp_path, "in.smi.gz", gzip.compress(b"CCO\nC1CC\nO\n"))
    assert rc == 0 and predicted(rows) == [True, False, True]


def test_exotic_elements_salts_and_atom_limit(ckpt, tmp_path):
    content = (
        b"[Og] og\n[U] u\n* dummy\n[2H]C deuterated\n[Na+].[Cl-] salt\nCC(=O)[O-].[NH4+] acetate\n"
        b"F[Pt@SP1](Cl)(Br)I platinum\nCc1cccc(Cl)c1-c1c(C)cccc1Br biaryl\n" + b"C" * 40 + b" chain\n"
    )
    rc, rows = infer(ckpt, tmp_path, "exotic.smi", content, "--max-atoms", "30")
    assert rc == 0
    assert predicted(rows) == [True] * 8 + [False]
    assert rows[-1]["error"] == "40 atoms exceed the limit of 30"
    assert all(r["mode"] == "2d" for r in rows[:8])


@pytest.mark.parametrize("mode", ["3d", "2d3d"])
def test_3d_asked_for_smiles_is_a_record_error(ckpt, tmp_path, mode):
    rc, rows = infer(ckpt, tmp_path, "in.smi", b"CCO a\nC1CC b\n", "--mode", mode)
    assert rc == 0 and predicted(rows) == [False, False]
    assert rows[0]["error"] == f"mode {mode} needs 3D coordinates and this record has none"
    assert "parse" in rows[1]["error"]  # the parse error wins over the mode error


def test_conformers_for_exotic_records(ckpt, tmp_path):
    """--conformers embeds salts, dummy atoms and superheavy elements (or reports why not)."""
    content = b"[Og] og\n* dummy\n[Na+].[Cl-] salt\nCC(=O)[O-].[NH4+] acetate\nC1CC bad\nC methane\n"
    rc, rows = infer(ckpt, tmp_path, "exo.smi", content, "--conformers", "--mode", "3d")
    assert rc == 0
    assert predicted(rows) == [True, True, True, True, False, True]
    assert all(r["mode"] == "3d" for r in rows if r["prediction"])


def test_csv_with_nul_and_quotes(ckpt, tmp_path):
    content = b'name,smiles\na,CCO\nb,"C\x00C"\nc,"CC(=O)O"\nd,\n'
    rc, rows = infer(ckpt, tmp_path, "in.csv", content)
    assert rc == 0
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"]
    assert predicted(rows) == [True, False, True, False]
    assert rows[3]["error"] == "empty SMILES"


# ----------------------------------------------------------------- SDF files
def block(name: str, atoms, bonds, dim: str = "3D") -> str:
    lines = [name, f"     RDKit          {dim}", ""]
    lines.append(f"{len(atoms):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000")
    for symbol, (x, y, z) in atoms:
        lines.append(f"{x:10.4f}{y:10.4f}{z:10.4f} {symbol:<3} 0  0  0  0  0  0  0  0  0  0  0  0")
    for i, j in bonds:
        lines.append(f"{i:3d}{j:3d}  1  0")
    lines.append("M  END")
    return "\n".join(lines) + "\n$$$$\n"


ETHANOL = [("C", (0.0, 0.0, 0.0)), ("C", (1.5, 0.0, 0.0)), ("O", (2.1, 1.2, 0.0))]


def test_sdf_records_with_missing_or_bad_coordinate_blocks(ckpt, tmp_path):
    good = block("good", ETHANOL, [(1, 2), (2, 3)])
    no_atom_block = "\n".join(line for line in good.splitlines() if not line.startswith("    ")) + "\n"
    nan = good.replace("    2.1000", "       nan").replace("good", "nan", 1)
    flat = block("flat", [(s, (0.0, 0.0, 0.0)) for s, _ in ETHANOL], [(1, 2), (2, 3)], dim="2D")
    coincident = block("coincident", [(s, (1.0, 1.0, 1.0)) for s, _ in ETHANOL], [(1, 2), (2, 3)])
    far = block("far", [("C", (0.0, 0.0, 0.0)), ("O", (9999.0, 9999.0, 9999.0))], [])
    content = "$$$$\n" + good + no_atom_block.replace("good", "noatoms", 1) + nan + flat + coincident + far
    rc, rows = infer(ckpt, tmp_path, "in.sdf", content.encode())
    assert rc == 0
    assert [r["name"] for r in rows] == ["0", "good", "noatoms", "nan", "flat", "coincident", "far"]
    assert predicted(rows) == [False, True, False, False, True, True, True]
    assert rows[0]["error"] == "empty SDF record"
    assert "malformed" in rows[2]["error"] and "malformed" in rows[3]["error"]
    assert [r["mode"] for r in rows] == ["", "2d3d", "", "", "2d", "2d3d", "2d3d"]


def test_sdf_without_coordinates_when_3d_is_asked(ckpt, tmp_path):
    flat = block("flat", [(s, (0.0, 0.0, 0.0)) for s, _ in ETHANOL], [(1, 2), (2, 3)], dim="2D")
    good = block("good", ETHANOL, [(1, 2), (2, 3)])
    rc, rows = infer(ckpt, tmp_path, "in.sdf", (flat + good).encode(), "--mode", "3d")
    assert rc == 0 and predicted(rows) == [False, True]
    assert "needs 3D coordinates" in rows[0]["error"] and rows[1]["mode"] == "3d"


def test_2d_drawn_sdf_is_read_in_2d(ckpt, tmp_path):
    drawn = block("drawn", [("C", (0.0, 0.0, 0.0)), ("C", (1.299, 0.75, 0.0)), ("O", (2.598, 0.0, 0.0))],
                  [(1, 2), (2, 3)], dim="2D")
    rc, rows = infer(ckpt, tmp_path, "drawn.sdf", drawn.encode())
    assert rc == 0 and rows[0]["mode"] == "2d"
    rc, rows = infer(ckpt, tmp_path, "drawn.sdf", drawn.encode(), "--mode", "3d")
    assert rc == 0 and "needs 3D coordinates" in rows[0]["error"]


def test_truncated_sdf(ckpt, tmp_path):
    good = block("good", ETHANOL, [(1, 2), (2, 3)])
    rc, rows = infer(ckpt, tmp_path, "cut.sdf", (good + good[: len(good) // 2]).encode())
    assert rc == 0 and predicted(rows) == [True, False]


# ------------------------------------------------------- refused checkpoints
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refused_checkpoint_is_a_clean_error_and_keeps_old_output(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "tmzoo": {}, "x": _Payload(marker)}, evil)
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\n")
    out = tmp_path / "out.csv"
    out.write_text("previous results\n")
    rc = main(["infer", "--checkpoint", str(evil), "--input", str(smi), "--output", str(out), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "tmzoo infer: error:" in err and "refusing" in err and "system" in err
    assert not marker.exists()
    assert out.read_text() == "previous results\n"


def test_refused_checkpoint_in_convert(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Payload(marker)}, evil)
    rc = main(["convert", str(evil), str(tmp_path / "out.ckpt")])
    assert rc == 2 and "refusing" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()
