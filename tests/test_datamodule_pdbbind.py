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
    reasons = {f.name: f.error for f in cache.failures}
    assert sorted(reasons) == ["5abc", "9zzz"]
    assert "no folder" in reasons["9zzz"] and "ligand" in reasons["5abc"]
    listed = (cache.folder / "failures.csv").read_text()
    assert "9zzz" in listed and "5abc" in listed
    assert len(cache) == 3 and "2 PDBBind complexes skipped" in caplog.text


def test_missing_index_named(tmp_path):
    (tmp_path / "index").mkdir()
    shutil.copy(ROOT / "INDEX_refined_data.2016", tmp_path / "index")  # found under index/
    with pytest.raises(FileNotFoundError, match="INDEX_core_data.2016 is neither"):
        make(tmp_path, root=tmp_path)


@pytest.mark.slow
def test_split_items_equal_those_of_the_cached_pairs_path(tmp_path):
    """Compact molecules + transform on access = the graphs of caching the pair features."""
    new, old = make(tmp_path), make(tmp_path, cache_pairs=True)
    new.setup("fit"), old.setup("fit")
    for split in ("train", "test"):
        for a, b in zip(new.splits[split], old.splits[split]):
            assert sorted(a.keys()) == sorted(b.keys()) and a.name == b.name
            for key in a.keys():
                if isinstance(a[key], torch.Tensor):
                    assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
                else:
                    assert a[key] == b[key], key
    assert new.splits["test"].num_nodes_per_item.tolist() == [d.num_nodes for d in new.splits["test"]]


def index_only_root(tmp_path) -> Path:
    root = tmp_path / "pdbbind"
    root.mkdir()
    for name in ("INDEX_refined_data.2016", "INDEX_core_data.2016"):
        shutil.copy(ROOT / name, root / name)
    return root


def test_a_root_without_complex_folders_says_so(tmp_path):
    root = index_only_root(tmp_path)
    with pytest.raises(FileNotFoundError, match="no complex folders under .*pdbbind"):
        make(tmp_path, root=root).load()
    assert not list((tmp_path / "cache").glob("tmzoo-*"))


def test_complexes_that_all_fail_are_an_error_not_an_empty_cache(tmp_path):
    from tmzoo.datamodules.cache import EmptyCacheError

    root = index_only_root(tmp_path)
    for code in ("184l", "1h22", "2r9w"):
        (root / code).mkdir()  # folders without files
    with pytest.raises(EmptyCacheError, match="none of the 3 records"):
        make(tmp_path, root=root).load()
    assert not list((tmp_path / "cache").glob("tmzoo-*"))


def renamed_complex(source: Path, folder: Path, code: str) -> None:
    folder.mkdir(parents=True)
    for path in source.iterdir():
        shutil.copy(path, folder / path.name.replace(source.name, code))


def test_general_set_in_the_release_layout(tmp_path):
    root = tmp_path / "pdbbind"
    (root / "index").mkdir(parents=True)
    for code in ("184l", "1h22", "2r9w"):
        shutil.copytree(ROOT / code, root / "refined-set" / code)
    renamed_complex(ROOT / "184l", root / "general-set-except-refined" / "9gen", "9gen")
    for name in ("INDEX_refined_data.2016", "INDEX_core_data.2016"):
        shutil.copy(ROOT / name, root / "index" / name)
    (root / "index" / "INDEX_general_PL_data.2016").write_text(
        "# general set\n9gen  2.00  2000  5.50  Kd=3uM  // ref (LIG)\n"
        + (ROOT / "INDEX_refined_data.2016").read_text())
    refined = make(tmp_path / "a", root=root)
    refined.setup("fit")
    assert sorted(d.name for d in refined.splits["train"]) == ["184l"]
    general = make(tmp_path / "b", root=root, general_index="INDEX_general_PL_data.2016", val_fraction=0.0)
    general.setup("fit")
    assert not general.load().failures
    assert sorted(d.name for d in general.splits["train"]) == ["184l", "9gen"]
    assert sorted(d.name for d in general.splits["test"]) == ["1h22", "2r9w"]
    assert [d.y.item() for d in general.splits["train"] if d.name == "9gen"] == [5.5]


def test_labels_csv_instead_of_the_index_files(tmp_path):
    root = tmp_path / "mine"
    for code in ("184l", "1h22", "2r9w"):
        shutil.copytree(ROOT / code, root / code)
    (root / "labels.csv").write_text("pdb_id,affinity,split\n184l,4.0,train\n1H22,6.5,val\n2r9w,7.25,test\n")
    dm = make(tmp_path, root=root, labels_csv="labels.csv")
    dm.setup("fit")
    assert {k: [d.name for d in v] for k, v in dm.splits.items()} == \
        {"train": ["184l"], "val": ["1h22"], "test": ["2r9w"]}
    assert dm.splits["test"][0].y.item() == 7.25
    (root / "labels.csv").write_text("pdb_id,affinity\n184l,4.0\n1h22,x\n")
    with pytest.raises(ValueError, match=r"labels.csv:3: affinity 'x' of '1h22' is not a number"):
        make(tmp_path, root=root, labels_csv="labels.csv")
    (root / "labels.csv").write_text("pdb_id,affinity\n184l,4.0\n")
    with pytest.raises(FileNotFoundError, match="INDEX_core_data.2016"):  # no split column, no core set
        make(tmp_path, root=root, labels_csv="labels.csv")
