"""PDBBindDataModule on the 3-complex fixture: mol2 fallback, pocket cutoff, skipped complexes."""

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from tmzoo.datamodules import PDBBindDataModule

ROOT = Path(__file__).parent / "fixtures" / "pdbbind"


def make(tmp_path, root=ROOT, **kwargs):
    kwargs.setdefault("num_proc", 1)
    return PDBBindDataModule(str(root), cache_dir=str(tmp_path / "cache"), **kwargs)


def complexes(dm) -> dict:
    store = dm.load().store
    return {store[i].name: store[i] for i in range(len(store))}


def pocket_atoms(code: str) -> tuple[torch.Tensor, list[str]]:
    """Heavy, non-water pocket atoms read independently of the loader (PDB columns)."""
    coords, residues = [], []
    with gzip.open(ROOT / code / f"{code}_pocket.pdb.gz", "rt") as handle:
        for line in handle:
            if line.startswith(("ATOM", "HETATM")):
                element = line[76:78].strip() or line[12:16].strip()[0]
                if element != "H" and line[17:20].strip() != "HOH":
                    coords.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
                    residues.append(line[17:20])
    return torch.tensor(coords), residues


def test_counts_splits_and_affinities(tmp_path):
    dm = make(tmp_path)
    dm.setup("fit")
    graphs = complexes(dm)
    assert sorted(graphs) == ["184l", "1h22", "2r9w"] and not dm.load().failures
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 1, "val": 0, "test": 2}
    assert sorted(d.name for d in dm.splits["test"]) == ["1h22", "2r9w"]  # the core set
    assert dm.splits["train"][0].name == "184l"
    assert graphs["1h22"].y.item() == pytest.approx(9.10) and graphs["184l"].y.item() == pytest.approx(4.72)
    assert dm.target_mean == pytest.approx([4.72])


def test_mol2_fallback_for_unsanitisable_sdf(tmp_path):
    assert Chem.MolFromMolFile(str(ROOT / "2r9w" / "2r9w_ligand.sdf")) is None
    mol2 = Chem.RemoveAllHs(Chem.MolFromMol2File(str(ROOT / "2r9w" / "2r9w_ligand.mol2")))
    graph = complexes(make(tmp_path))["2r9w"]
    ligand = graph.ligand_mask
    assert int(ligand.sum()) == mol2.GetNumAtoms() == 29
    assert torch.allclose(graph.pos[ligand], torch.tensor(mol2.GetConformer().GetPositions()).float())


def test_ligand_heavy_atoms_from_sdf(tmp_path):
    sdf = Chem.RemoveAllHs(Chem.MolFromMolFile(str(ROOT / "184l" / "184l_ligand.sdf")))
    graph = complexes(make(tmp_path))["184l"]
    assert int(graph.ligand_mask.sum()) == sdf.GetNumAtoms() == 10  # isobutylbenzene
    assert bool(graph.ligand_mask[:10].all()) and not graph.ligand_mask[10:].any()
    assert (graph.x[graph.ligand_mask, 0] + 1 > 1).all()


@pytest.mark.parametrize("cutoff", [4.0, 6.0])
def test_pocket_atoms_within_cutoff(tmp_path, cutoff):
    graphs = complexes(make(tmp_path, cutoff=cutoff))
    for code, graph in graphs.items():
        ligand_pos = graph.pos[graph.ligand_mask]
        coords, _ = pocket_atoms(code)
        near = torch.cdist(coords, ligand_pos).min(dim=1).values <= cutoff
        pocket = graph.pos[~graph.ligand_mask]
        assert len(pocket) == int(near.sum()), code
        assert torch.allclose(pocket, coords[near], atol=1e-3), code


def test_bigger_cutoff_more_atoms_no_ligand_pocket_bonds(tmp_path):
    small, large = complexes(make(tmp_path, cutoff=4.0)), complexes(make(tmp_path, cutoff=8.0))
    for code in small:
        assert small[code].num_nodes < large[code].num_nodes
        graph = large[code]
        src, dst = graph.edge_index
        assert torch.equal(graph.ligand_mask[src], graph.ligand_mask[dst])
        assert (graph.edge_index[:, ~graph.ligand_mask[src]] >= int(graph.ligand_mask.sum())).all()
    assert make(tmp_path, cutoff=4.0).cache_folder != make(tmp_path, cutoff=8.0).cache_folder


def test_unreadable_complexes_listed_and_skipped(tmp_path, caplog):
    root = tmp_path / "pdbbind"
    shutil.copytree(ROOT, root)
    with open(root / "INDEX_refined_data.2016", "a") as handle:
        handle.write("9zzz  NA    NA   6.00  NA  // NA (NA)\n5abc  NA    NA   7.00  NA  // NA (NA)\n")
    (root / "5abc").mkdir()
    (root / "5abc" / "5abc_ligand.sdf").write_text("not a molfile\n")
    shutil.copy(ROOT / "184l" / "184l_pocket.pdb.gz", root / "5abc" / "5abc_pocket.pdb.gz")
    dm = make(tmp_path, root=root)
    dm.setup("fit")
    cache = dm.load()
    reasons = {f.name: f.reason for f in cache.failures}
    assert sorted(reasons) == ["5abc", "9zzz"]
    assert "no folder" in reasons["9zzz"] and "ligand" in reasons["5abc"]
    listed = (cache.folder / "skipped.csv").read_text()
    assert "9zzz" in listed and "5abc" in listed
    assert len(cache) == 3 and "2 PDBBind complexes skipped" in caplog.text


def test_missing_index_named(tmp_path):
    (tmp_path / "index").mkdir()
    shutil.copy(ROOT / "INDEX_refined_data.2016", tmp_path / "index")  # found under index/
    with pytest.raises(FileNotFoundError, match="INDEX_core_data.2016 is neither"):
        make(tmp_path, root=tmp_path)
