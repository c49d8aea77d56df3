"""Data for the benchmarks: real PCQM4Mv2 molecules (SMILES and DFT geometries)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "pcqm4mv2" / "sample1700"
PCQM4MV2_MOLECULES = 3_746_620

# used only when neither the shared sample nor the packaged demo copy exists
_EMBEDDED_SMILES = [
    "Cc1ccc([C@H]2[CH]c3cnccc3[N]C2=O)cc1",
    "COc1ccc(/C=C/N(C)C(C)=O)c(OC)c1",
    "C=CCN(/C=C/c1ccccc1C)C(C)=O",
    "C=CCN(/C=C/c1ccccc1F)C(C)=O",
    "CC(=O)Nc1ccc(O)cc1",
    "Oc1ccccc1",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "O=C(O)c1ccccc1OC(C)=O",
    "c1ccc2c(c1)ccc1ccccc12",
    "OCC1OC(O)C(O)C(O)C1O",
    "CCN(CC)CCOC(=O)c1ccc(N)cc1",
]


def _candidates() -> list[Path]:
    demo = sorted((ROOT / "src" / "tmzoo" / "demo_data").glob("**/pcqm4m*/raw/data.csv.gz"))
    return [SHARED_SAMPLE / "pcqm4m-v2" / "raw" / "data.csv.gz", *demo]


def sample_source() -> str:
    """Where the SMILES come from (printed with the results)."""
    for path in _candidates():
        if path.exists():
            return str(path)
    return "embedded SMILES"


def load_smiles(limit: int | None = None) -> list[str]:
    """PCQM4Mv2 SMILES in file order (the shared 1,700-molecule sample when present)."""
    for path in _candidates():
        if path.exists():
            with gzip.open(path, "rt") as handle:
                rows = [row["smiles"] for row in csv.DictReader(handle)]
            break
    else:
        rows = list(_EMBEDDED_SMILES)
    if limit is not None:
        rows = (rows * (limit // len(rows) + 1))[:limit]
    return rows


def load_3d_molecules(limit: int | None = None) -> list:
    """RDKit molecules with DFT coordinates (PCQM4Mv2 train SDF), or embedded ones as fallback."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    sdf = SHARED_SAMPLE / "pcqm4m-v2-train.sdf"
    demo = sorted((ROOT / "src" / "tmzoo" / "demo_data").glob("**/pcqm4m*train*.sdf*"))
    mols: list = []
    for path in [sdf, *demo]:
        if path.exists():
            if path.suffix == ".gz":
                supplier = Chem.ForwardSDMolSupplier(gzip.open(path, "rb"))
            else:
                supplier = Chem.SDMolSupplier(str(path))
            mols = [m for m in supplier if m is not None]
            break
    if not mols:  # embed coordinates with RDKit for the fallback SMILES
        for smi in _EMBEDDED_SMILES:
            mol = Chem.AddHs(Chem.MolFromSmiles(smi))
            if AllChem.EmbedMolecule(mol, randomSeed=0) == 0:
                mols.append(Chem.RemoveHs(mol))
    if limit is not None:
        mols = (mols * (limit // len(mols) + 1))[:limit]
    return mols
