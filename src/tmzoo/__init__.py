"""tmzoo: Transformer-M on PyTorch Lightning and PyTorch Geometric."""

import sys as _sys

__version__ = "0.1.0"


def _import_ogb_offline() -> None:
    """Import OGB without its PyPI version check: ``import ogb`` starts a thread that asks PyPI
    whether a newer release exists (``ogb/version.py``), and tmzoo makes no network access at
    import. Hiding the optional ``outdated`` package for the duration of that one import turns
    the check off; it is restored afterwards."""
    if "ogb" in _sys.modules:
        return
    missing = object()
    saved = _sys.modules.get("outdated", missing)
    _sys.modules["outdated"] = None  # "from outdated import ..." raises ImportError
    try:
        import ogb  # noqa: F401
    except ImportError:  # pragma: no cover - OGB is a dependency
        pass
    finally:
        if saved is missing:
            del _sys.modules["outdated"]
        else:
            _sys.modules["outdated"] = saved


_import_ogb_offline()
