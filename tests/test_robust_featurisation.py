"""Bad and unusual records at the featurisation level.

Each record is either featurised correctly (known answers asserted) or refused with
:class:`MoleculeError` whose message names the problem — never another exception type.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Geometry import Point3D

from tmzoo.chem.molecule import MoleculeError, mol_from_smiles, mol_to_data, smiles_to_data
from tmzoo.chem.paths import UNREACHABLE
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.io.featurize import record_mode
from tmzoo.io.records import read_records
from tmzoo.models import Mode

CORRECT = transformer_m_transform()
REFERENCE = transformer_m_transform(reference_compatible=True)


def featurised(smiles: str, transform=CORRECT):
    return transform(smiles_to_data(smiles))


def spd_matrix(data) -> np.ndarray:
    n = data.num_nodes
    return data.pair_spd.view(n, n).numpy()


def path_codes(data) -> np.ndarray:
    n = data.num_nodes
    return data.pair_path.view(n, n, *data.pair_path.shape[1:]).numpy()


# ---------------------------------------------------------------- unparsable
@pytest.mark.parametrize("smiles", ["", "   ", "\t\n", None])
def test_empty_smiles(smiles):
    with pytest.raises(MoleculeError, match="empty SMILES"):
        smiles_to_data(smiles)


@pytest.mark.parametrize("smiles", ["C1CC", "[Xx]", "c1cccc1", "CC(", "C=1=C", ".", "Cl[C@H](Br", "C%"])
def test_invalid_smiles_names_the_input(smiles):
    with pytest.raises(MoleculeError, match="RDKit cannot parse SMILES") as err:
        smiles_to_data(smiles)
    assert repr(smiles) in str(err.value)


@pytest.mark.parametrize("smiles", ["CC\x00C", "CCO\x00", "\x00C"])
def test_nul_characters_are_refused_not_truncated(smiles):
    """RDKit would read ``"CCO\\x00..."`` as ``CCO``: a different molecule, silently."""
    with pytest.raises(MoleculeError, match="NUL"):
        mol_from_smiles(smiles)


def test_no_molecule_and_no_atoms():
    with pytest.raises(MoleculeError, match="no molecule"):
        mol_to_data(None)
    with pytest.raises(MoleculeError, match="no atoms"):
        mol_to_data(Chem.Mol())


def test_unsanitised_impossible_valence_is_a_molecule_error():
    mol = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)  # pentavalent carbon
    with pytest.raises(MoleculeError, match="atom features failed"):
        mol_to_data(mol)


# ---------------------------------------------------------------- atom limit
def test_atom_limit():
    chain = "C" * 40
    assert smiles_to_data(chain, max_atoms=40).num_nodes == 40
    with pytest.raises(MoleculeError, match="40 atoms exceed the limit of 39"):
        smiles_to_data(chain, max_atoms=39)
    with pytest.raises(MoleculeError, match="exceed the limit of 0"):
        smiles_to_data("C", max_atoms=0)


def test_long_chain_beyond_the_spd_table_is_featurised():
    """600 atoms: distances above 510 are kept exactly (int16; the model clamps the row)."""
    data = featurised("C" * 600)
    spd = spd_matrix(data)
    assert spd[0, 599] == 599 and spd[0, 509] == 509 and spd.dtype == np.int16
    assert (path_codes(data)[0, 509] != 0).all(axis=-1).sum() == 5


# -------------------------------------------------------- exotic elements
@pytest.mark.parametrize(
    "smiles, ogb_atomic, z",
    [("[Og]", 117, 118), ("[U]", 91, 92), ("[He]", 1, 2), ("*", 118, 119), ("[*]", 118, 119), ("[119*]", 118, 119)],
)
def test_exotic_and_dummy_atoms(smiles, ogb_atomic, z):
    data = featurised(smiles)
    assert data.x[0, 0].item() == ogb_atomic  # dummy/unknown -> OGB's "misc" row
    assert data.x[0, 0].item() + 1 == z  # the atomic number the model's 3D pair types are read from
    assert data.pair_spd.tolist() == [0] and not data.pair_path.any()
    assert data.degree.tolist() == [0]


@pytest.mark.parametrize("smiles, plain", [("[13CH4]", "C"), ("[13CH3][12CH2]O", "CCO"), ("[15NH3]", "N")])
def test_isotopes_do_not_change_features(smiles, plain):
    a, b = featurised(smiles), featurised(plain)
    assert torch.equal(a.x, b.x) and torch.equal(a.edge_attr, b.edge_attr)
    assert torch.equal(a.pair_spd, b.pair_spd) and torch.equal(a.pair_path, b.pair_path)


def test_explicit_deuterium_is_an_atom():
    data = featurised("[2H]C")
    assert data.num_nodes == 2 and data.x[0, 0].item() == 0  # Z = 1
    assert spd_matrix(data).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    "smiles, column, index",
    [
        ("[Fe+6]", 3, 11),  # formal charge outside -5..5 -> misc
        ("[CH3]", 5, 1),  # one radical electron
        ("[U](C)(C)(C)(C)(C)(C)(C)(C)(C)(C)(C)(C)", 2, 11),  # degree 12 -> misc
        ("F[Pt@SP1](Cl)(Br)I", 1, 4),  # square-planar chirality -> misc
    ],
)
def test_out_of_vocabulary_atom_features_go_to_misc(smiles, column, index):
    data = featurised(smiles)
    atom = 1 if smiles.startswith("F[Pt") else 0
    assert data.x[atom, column].item() == index


def test_high_degree_atom_keeps_its_degree():
    data = featurised("[U](C)(C)(C)(C)(C)(C)(C)(C)(C)(C)(C)(C)")
    assert data.degree[0].item() == 12


def test_atropisomer_bond_stereo_is_featurised_like_the_plain_molecule():
    """RDKit >= 2024.03 reads atropisomer wedges (CXSMILES) into STEREOATROPCW, which OGB's
    bond vocabulary lacks; it used to raise a bare ValueError."""
    cx = "Cc1cccc(Cl)c1-c1c(C)cccc1Br |wU:7.6|"
    mol = mol_from_smiles(cx)
    assert any(str(b.GetStereo()).startswith("STEREOATROP") for b in mol.GetBonds())
    a, b = featurised(cx), featurised("Cc1cccc(Cl)c1-c1c(C)cccc1Br")
    assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.pair_path, b.pair_path)


# ------------------------------------------------------ charged fragments
@pytest.mark.parametrize("transform", [CORRECT, REFERENCE], ids=["correct", "reference"])
def test_salt_fragments_are_unreachable(transform):
    data = featurised("[Na+].[Cl-]", transform)
    assert spd_matrix(data).tolist() == [[0, UNREACHABLE], [UNREACHABLE, 0]]
    assert UNREACHABLE == 510
    assert not data.pair_path.any()
    assert data.edge_index.shape == (2, 0) and data.edge_attr.shape == (0, 3)
    assert data.degree.tolist() == [0, 0]
    assert data.x[:, 3].tolist() == [6, 4]  # formal charges +1, -1 (index = charge + 5)


@pytest.mark.parametrize("transform", [CORRECT, REFERENCE], ids=["correct", "reference"])
def test_ammonium_acetate(transform):
    data = featurised("CC(=O)[O-].[NH4+]", transform)
    spd = spd_matrix(data)
    acetate = [[0, 1, 2, 2], [1, 0, 1, 1], [2, 1, 0, 2], [2, 1, 2, 0]]
    assert spd[:4, :4].tolist() == acetate
    assert (spd[4, :4] == 510).all() and (spd[:4, 4] == 510).all() and spd[4, 4] == 0
    codes = path_codes(data)
    assert not codes[4, :4].any() and not codes[:4, 4].any()
    hops = (codes != 0).any(axis=-1).sum(axis=-1)
    assert hops[:4, :4].tolist() == acetate  # one hop per bond of the path (no atom-0 quirk here)
    assert data.x[3, 3].item() == 4 and data.x[4, 3].item() == 6
    assert data.degree.tolist() == [1, 3, 1, 1, 0]


def test_many_fragments_and_single_atoms():
    data = featurised("O.O.O.[Na+].[Cl-]")
    spd = spd_matrix(data)
    assert (spd[~np.eye(5, dtype=bool)] == 510).all()
    assert not data.pair_path.any()


# ------------------------------------------------------------- coordinates
def _with_conformer(smiles: str, positions) -> Chem.Mol:
    mol = Chem.MolFromSmiles(smiles)
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, Point3D(*p))
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    return mol


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_coordinates(bad):
    mol = _with_conformer("CCO", [(0, 0, 0), (1.5, bad, 0), (3, 0, 0)])
    with pytest.raises(MoleculeError, match="NaN or inf"):
        mol_to_data(mol)
    # the same record without coordinates is fine
    assert not mol_to_data(mol, use_coordinates=False).has_pos.item()


def test_coincident_atoms_are_kept():
    mol = _with_conformer("CCO", [(1, 1, 1), (1, 1, 1), (1, 1, 1)])
    data = mol_to_data(mol)
    assert data.has_pos.item() and torch.equal(data.pos, torch.ones(3, 3))


def test_far_apart_atoms_are_kept():
    mol = _with_conformer("C.O", [(0, 0, 0), (1e4, 1e4, 1e4)])
    data = mol_to_data(mol)
    assert data.has_pos.item() and data.pos[1].tolist() == [1e4, 1e4, 1e4]


SDF_2D_NO_COORDS = """mol1
     RDKit          2D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  1  0
M  END
"""


def test_sdf_record_without_coordinates_has_no_positions():
    mol = Chem.MolFromMolBlock(SDF_2D_NO_COORDS)
    data = mol_to_data(mol, use_coordinates=True)
    assert not data.has_pos.item() and not data.pos.any()
    assert data.num_nodes == 3


@pytest.mark.parametrize("requested", ["3d", "2d3d"])
def test_3d_asked_without_coordinates_is_a_molecule_error(requested):
    with pytest.raises(MoleculeError, match="needs 3D coordinates"):
        record_mode(requested, has_pos=False)
    with pytest.raises(MoleculeError, match="no 3D channel"):
        record_mode(requested, has_pos=True, model_has_3d=False)
    assert record_mode("auto", has_pos=False) == Mode.ONLY_2D
    assert record_mode("auto", has_pos=True) == Mode.BOTH


@pytest.mark.parametrize(
    "block",
    [
        SDF_2D_NO_COORDS.replace("    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n", "", 1),
        SDF_2D_NO_COORDS.replace("0.0000    0.0000    0.0000 O", "nan       0.0000    0.0000 O"),
        "\n".join(SDF_2D_NO_COORDS.splitlines()[:4]),
    ],
    ids=["atom-line-missing", "nan-coordinate", "truncated"],
)
def test_malformed_sdf_blocks_never_reach_featurisation(block):
    """RDKit refuses these blocks (``None``), which ``mol_to_data`` turns into a MoleculeError."""
    mol = Chem.MolFromMolBlock(block)
    with pytest.raises(MoleculeError):
        mol_to_data(mol)


@pytest.mark.parametrize(
    "block",
    [
        SDF_2D_NO_COORDS.replace("    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n", "", 1),
        SDF_2D_NO_COORDS.replace("0.0000    0.0000    0.0000 O", "nan       0.0000    0.0000 O"),
        "\n".join(SDF_2D_NO_COORDS.splitlines()[:4]) + "\n",
    ],
    ids=["atom-line-missing", "nan-coordinate", "truncated"],
)
def test_malformed_sdf_blocks_are_error_records_between_good_ones(tmp_path, block):
    """Read from a file, such a block is one record with a reason; its neighbours are kept."""
    path = tmp_path / "in.sdf"
    path.write_text(SDF_2D_NO_COORDS + "$$$$\n" + block + "$$$$\n" + SDF_2D_NO_COORDS)
    records = list(read_records(path))
    assert [(r.index, r.mol is None) for r in records] == [(0, False), (1, True), (2, False)]
    assert records[1].name == "mol1" and "RDKit cannot" in records[1].error


def test_missing_conformer_id_is_a_molecule_error():
    mol = _with_conformer("CC", [(0, 0, 0), (1.5, 0, 0)])
    with pytest.raises(MoleculeError, match="no conformer 7"):
        mol_to_data(mol, conformer_id=7)
    mol = Chem.MolFromSmiles("CC")  # no conformer at all: no coordinates, no error
    assert not mol_to_data(mol, conformer_id=7).has_pos.item()


DEPICTION = SDF_2D_NO_COORDS.replace(
    "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
    "    0.0000    0.0000    0.0000 C",
    "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
    "    1.2990    0.7500    0.0000 C",
).replace("    0.0000    0.0000    0.0000 O", "    2.5981   -0.0000    0.0000 O")


def test_2d_depiction_coordinates_are_not_a_geometry():
    """A molfile drawn in 2D (flat layout coordinates) must not feed the 3D channel."""
    mol = Chem.MolFromMolBlock(DEPICTION)
    assert not mol.GetConformer().Is3D() and mol.GetConformer().GetPositions().any()
    data = mol_to_data(mol)
    assert not data.has_pos.item() and not data.pos.any()


def test_computed_2d_layout_is_not_a_geometry():
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles("c1ccccc1O")
    AllChem.Compute2DCoords(mol)
    assert not mol_to_data(mol).has_pos.item()


@pytest.mark.parametrize("header", ["3D", ""], ids=["flagged-3D", "no-dimension-code"])
def test_3d_molfiles_keep_their_coordinates(header):
    block = DEPICTION.replace("RDKit          2D", f"RDKit          {header}")
    if header == "":  # RDKit decides from the z coordinates
        block = block.replace("2.5981   -0.0000    0.0000 O", "2.5981   -0.0000    0.4000 O")
    mol = Chem.MolFromMolBlock(block)
    data = mol_to_data(mol)
    assert data.has_pos.item() and data.pos.abs().sum() > 0


@pytest.mark.parametrize("far", [1e7, 1e19, 3e38])
def test_absurd_coordinates_are_refused(far):
    """Squared distances overflow fp32 from ~1e19 Å (inf distances, NaN gradients); nothing
    physical is beyond 1e6 Å, so such records are refused while 1e4 Å is kept."""
    mol = _with_conformer("CO", [(0, 0, 0), (far, 0, 0)])
    with pytest.raises(MoleculeError, match="beyond"):
        mol_to_data(mol)
    assert mol_to_data(_with_conformer("CO", [(0, 0, 0), (1e6, 0, 0)])).has_pos.item()
