"""Fetching and unpacking the official PCQM4Mv2 files (never called implicitly).

The URLs are the ones OGB uses (``ogb.lsc.PCQM4Mv2Dataset`` and the 3D training SDF of the
Transformer-M reference). Any URL ``urllib`` opens works, ``file://`` included.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

PCQM4MV2_URL = "https://dgl-data.s3-accelerate.amazonaws.com/dataset/OGB-LSC/pcqm4m-v2.zip"
PCQM4MV2_SDF_URL = "http://ogb-data.stanford.edu/data/lsc/pcqm4m-v2-train.sdf.tar.gz"


def fetch(url: str, folder: Path) -> Path:
    """Downloads ``url`` into ``folder`` (written under a temporary name, then renamed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PurePosixPath(urllib.parse.urlparse(url).path).name
    with urllib.request.urlopen(url) as response:
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    os.replace(partial, target)
    return target


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def extract(archive: Path, folder: Path) -> list[str]:
    """Unpacks a ``.zip`` or ``.tar.gz`` into ``folder``; refuses paths leaving it."""
    archive, folder = Path(archive), Path(folder)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
            bad = [n for n in names if not _safe_member(n)]
            if bad:
                raise ValueError(f"{archive} holds a path outside its folder: {bad[0]}")
            zipped.extractall(folder)
        return names
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        bad = [m.name for m in members if not _safe_member(m.name) or m.issym() or m.islnk()]
        if bad:
            raise ValueError(f"{archive} holds a link or a path outside its folder: {bad[0]}")
        tar.extractall(folder, members=members)
        return [m.name for m in members]


def download_pcqm4mv2(
    root: str | Path, url: str = PCQM4MV2_URL, sdf_url: str | None = PCQM4MV2_SDF_URL
) -> Path:
    """Puts ``pcqm4m-v2/`` (CSV, split) and ``pcqm4m-v2-train.sdf`` under ``root``.

    Files already there are kept. About 60 MB + 1.3 GB; the SDF unpacks to ~7 GB.
    """
    root = Path(root)
    if not (root / "pcqm4m-v2" / "raw" / "data.csv.gz").is_file():
        archive = fetch(url, root)
        extract(archive, root)
        archive.unlink()
    if sdf_url and not any((root / f"pcqm4m-v2-train.sdf{s}").is_file() for s in ("", ".gz")):
        archive = fetch(sdf_url, root)
        extract(archive, root)
        archive.unlink()
    return root


__all__ = ["PCQM4MV2_URL", "PCQM4MV2_SDF_URL", "download_pcqm4mv2", "extract", "fetch"]
