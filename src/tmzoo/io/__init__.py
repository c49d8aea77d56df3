"""Reading users' molecule files record by record."""

from tmzoo.io.records import Record, read_records

__all__ = ["Record", "read_records"]
