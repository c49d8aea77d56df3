"""Reading users' molecule files and the datasets' raw files; writing outputs safely."""

from tmzoo.io.files import DamagedInputError, atomic_write, check_output, open_text, write_failures
from tmzoo.io.records import Record, read_records

__all__ = [
    "DamagedInputError",
    "Record",
    "atomic_write",
    "check_output",
    "open_text",
    "read_records",
    "write_failures",
]
