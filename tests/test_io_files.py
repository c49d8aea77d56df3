"""Opening inputs and writing outputs (``tmzoo.io.files``).

Outputs (issue 11): an output that is the input is refused; files honour the umask (they
were 0600 whatever it was); a symlinked output path is written *through* (the link stays).
"""

from __future__ import annotations

import csv
import gzip
import os
import stat
import zlib

import pytest

from tmzoo.io.files import (
    FAILURES_FILE,
    DamagedInputError,
    atomic_write,
    check_output,
    find_file,
    open_binary,
    open_text,
    write_failures,
)


@pytest.fixture
def umask():
    """Set the process umask for one test."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ----------------------------------------------------------------------------- outputs
def test_output_that_is_the_input_is_refused(tmp_path):
    source = tmp_path / "in.smi"
    source.write_text("CCO\n")
    os.symlink(source, tmp_path / "link.csv")
    os.link(source, tmp_path / "hard.csv")
    for output in (source, tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "sub" / ".." / "in.smi"):
        with pytest.raises(ValueError, match="is the input file"):
            check_output(output, source)
    assert check_output(tmp_path / "out.csv", source, None) == tmp_path / "out.csv"
    assert source.read_text() == "CCO\n"


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_write(tmp_path / "out.csv") as handle:
        handle.write("a\n")
    assert mode_of(tmp_path / "out.csv") == expected


def test_replaced_file_keeps_its_permissions(tmp_path, umask):
    umask(0o077)
    target = tmp_path / "shared.csv"
    target.write_text("old\n")
    target.chmod(0o664)
    with atomic_write(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n" and mode_of(target) == 0o664


def test_symlinked_output_is_written_through(tmp_path):
    real = tmp_path / "results" / "real.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "out.csv"
    link.symlink_to(real)
    with atomic_write(link) as handle:
        handle.write("new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "results" / "later.csv")
    with atomic_write(dangling) as handle:
        handle.write("x\n")
    assert dangling.is_symlink() and (tmp_path / "results" / "later.csv").read_text() == "x\n"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_failures_schema(tmp_path):
    path = write_failures(tmp_path / FAILURES_FILE, [(3, "bad, name", "RDKit cannot parse SMILES 'X'")])
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["index", "name", "error"], ["3", "bad, name", "RDKit cannot parse SMILES 'X'"]]


# ----------------------------------------------------------------------------- inputs
def test_open_text_gunzips_by_content_and_drops_a_byte_order_mark(tmp_path):
    (tmp_path / "a.csv").write_bytes(gzip.compress("\ufeffsmiles\r\nCCO\r\n".encode()))
    (tmp_path / "b.csv.gz").write_bytes("\ufeffsmiles\nCCO\n".encode())
    with open_text(tmp_path / "a.csv") as packed, open_text(tmp_path / "b.csv.gz") as plain:
        assert packed.read() == "smiles\r\nCCO\r\n" and plain.read() == "smiles\nCCO\n"


def test_damaged_gzip_hands_out_every_byte_before_the_damage(tmp_path):
    raw = b"".join(b"line %d\n" % i for i in range(200_000))
    packed = gzip.compress(raw)
    packed = packed[: len(packed) // 3]
    readable = zlib.decompressobj(wbits=31).decompress(packed)
    path = tmp_path / "cut.gz"
    path.write_bytes(packed)
    received = bytearray()
    with pytest.raises(DamagedInputError, match="cut.gz"):
        with open_binary(path) as stream:
            while chunk := stream.read1(1 << 16):
                received += chunk
    assert bytes(received) == readable
    lines = []
    with pytest.raises(DamagedInputError):
        with open_text(path) as handle:
            for line in handle:
                lines.append(line)
    assert "".join(lines) == readable[: readable.rfind(b"\n") + 1].decode()


def test_find_file_takes_the_plain_or_gzipped_name(tmp_path):
    assert find_file(tmp_path, "x.sdf") is None
    (tmp_path / "x.sdf.gz").write_bytes(gzip.compress(b""))
    assert find_file(tmp_path, "x.sdf") == tmp_path / "x.sdf.gz"
    (tmp_path / "x.sdf").write_text("")
    assert find_file(tmp_path, "x.sdf") == tmp_path / "x.sdf"
