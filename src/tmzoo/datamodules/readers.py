"""The datasets' raw-file helpers, re-exported from :mod:`tmzoo.io` (their one implementation).

SDF records are handed to worker processes as text and parsed there with
``Chem.MolFromMolBlock`` (the same parser, with the same defaults, as ``SDMolSupplier``).
A block whose ``error`` is set (no ``$$$$`` after it, or too large) is a failed record.
"""

from tmzoo.io.files import find_file, open_text
from tmzoo.io.records import block_heavy_formula, block_name, count_sdf_records, iter_sdf_blocks

__all__ = ["find_file", "open_text", "iter_sdf_blocks", "count_sdf_records", "block_name", "block_heavy_formula"]
