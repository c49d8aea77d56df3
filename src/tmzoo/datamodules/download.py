"""Fetching and unpacking the public raw files (never called implicitly).

Files are fetched with PyG's :func:`~torch_geometric.data.download_url` into a temporary folder
beside their destination, their SHA-256 compared with :data:`CHECKSUMS`, and only then renamed
into place: a failed or corrupted download leaves nothing behind. The URLs are those of
``torch_geometric.datasets.QM9`` and of OGB (``ogb.lsc.PCQM4Mv2Dataset``, and the 3D training
SDF of the Transformer-M reference). Any URL ``urllib`` opens works, ``file://`` included.
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
import tempfile
import urllib.parse
import zipfile
from pathlib import Path, PurePosixPath

from torch_geometric.data import download_url, extract_tar, extract_zip

from tmzoo.datamodules.storage import file_checksum
from tmzoo.io.files import find_file

log = logging.getLogger(__name__)

QM9_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip"
QM9_UNCHARACTERIZED_URL = "https://ndownloader.figshare.com/files/3195404"
PCQM4MV2_URL = "https://dgl-data.s3-accelerate.amazonaws.com/dataset/OGB-LSC/pcqm4m-v2.zip"
PCQM4MV2_SDF_URL = "http://ogb-data.stanford.edu/data/lsc/pcqm4m-v2-train.sdf.tar.gz"

# SHA-256 of the published files. ``None``: not recorded yet (no machine that built tmzoo could
# reach these hosts); such a download is not checked, and its computed digest is logged so that
# it can be recorded here. Pass ``sha256=`` to :func:`fetch` to check against a known value.
CHECKSUMS: dict[str, str | None] = {
    QM9_URL: None,
    QM9_UNCHARACTERIZED_URL: None,
    PCQM4MV2_URL: None,
    PCQM4MV2_SDF_URL: None,
}


class ChecksumError(OSError):
    """A downloaded file does not have the SHA-256 it should have (nothing was kept)."""


def sha256sum(path: Path) -> str:
    """SHA-256 of a file (hex)."""
    return file_checksum(path, "sha256")


def fetch(url: str, folder: Path, sha256: str | None = None, filename: str | None = None) -> Path:
    """Downloads ``url`` into ``folder`` (PyG's ``download_url``) and checks its SHA-256.

    ``sha256``: the expected digest (default: :data:`CHECKSUMS`); the file is renamed into
    ``folder`` only when it matches, else :class:`ChecksumError` and nothing is left behind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = sha256 if sha256 is not None else CHECKSUMS.get(url)
    name = filename or PurePosixPath(urllib.parse.urlparse(url).path).name
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}.download-") as partial:
        path = Path(download_url(url, partial, log=False, filename=name))
        digest = sha256sum(path)
        if expected is None:
            log.warning("%s: no SHA-256 recorded, not checked; it is %s", url, digest)
        elif digest != expected.lower():
            raise ChecksumError(
                f"{url}: the downloaded file's SHA-256 is {digest}, expected {expected}; the "
                "download is damaged or the file was changed upstream (nothing was kept)"
            )
        target = folder / name
        os.replace(path, target)
    return target


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _move_into(source: Path, target: Path) -> None:
    """Moves the entries of folder ``source`` into folder ``target``, merging folders."""
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and destination.is_dir():
            _move_into(entry, destination)
        else:
            os.replace(entry, destination)


def extract(archive: Path, folder: Path) -> list[str]:
    """Unpacks a ``.zip`` or ``.tar[.gz]`` into ``folder`` (PyG's ``extract_zip`` /
    ``extract_tar``); refuses links, special files and paths leaving it, before writing
    anything. Unpacks into a temporary folder beside, moved into place once complete: a
    damaged archive or a killed run leaves no partial file that would pass for a raw file."""
    archive, folder = Path(archive), Path(folder)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
        bad = [n for n in names if not _safe_member(n)]
        if bad:
            raise ValueError(f"{archive} holds a path outside its folder: {bad[0]}")
        unpack = extract_zip
    else:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
        bad = [m.name for m in members if not _safe_member(m.name) or not (m.isfile() or m.isdir())]
        if bad:
            raise ValueError(f"{archive} holds a link, a special file or a path outside its folder: {bad[0]}")
        names = [m.name for m in members]
        unpack = functools.partial(extract_tar, mode="r:*")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{archive.name}.extract-") as partial:
        unpack(str(archive), partial, log=False)
        _move_into(Path(partial), folder)
    return names


def _fetch_and_extract(url: str, folder: Path) -> None:
    archive = fetch(url, folder)
    extract(archive, folder)
    archive.unlink()


def download_qm9(
    raw_dir: str | Path, url: str = QM9_URL, uncharacterized_url: str = QM9_UNCHARACTERIZED_URL
) -> Path:
    """Puts ``gdb9.sdf``, ``gdb9.sdf.csv`` and ``uncharacterized.txt`` into ``raw_dir``, from
    the URLs ``torch_geometric.datasets.QM9`` uses (about 90 MB). Files already there are kept."""
    raw_dir = Path(raw_dir)
    if not all(find_file(raw_dir, name) for name in ("gdb9.sdf", "gdb9.sdf.csv")):
        _fetch_and_extract(url, raw_dir)
    if not find_file(raw_dir, "uncharacterized.txt"):
        os.replace(fetch(uncharacterized_url, raw_dir), raw_dir / "uncharacterized.txt")
    return raw_dir


def download_pcqm4mv2(
    root: str | Path, url: str = PCQM4MV2_URL, sdf_url: str | None = PCQM4MV2_SDF_URL
) -> Path:
    """Puts ``pcqm4m-v2/`` (CSV, split) and ``pcqm4m-v2-train.sdf`` under ``root``.

    Files already there are kept. About 60 MB + 1.3 GB; the SDF unpacks to ~7 GB.
    """
    root = Path(root)
    if not (root / "pcqm4m-v2" / "raw" / "data.csv.gz").is_file():
        _fetch_and_extract(url, root)
    if sdf_url and not find_file(root, "pcqm4m-v2-train.sdf"):
        _fetch_and_extract(sdf_url, root)
    return root


__all__ = [
    "CHECKSUMS",
    "ChecksumError",
    "PCQM4MV2_SDF_URL",
    "PCQM4MV2_URL",
    "QM9_UNCHARACTERIZED_URL",
    "QM9_URL",
    "download_pcqm4mv2",
    "download_qm9",
    "extract",
    "fetch",
    "sha256sum",
]
