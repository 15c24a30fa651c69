"""Reading ``torch.save`` files without ever running code from them.

``torch.load(weights_only=True)`` refuses pickled objects, but its error messages run to
many lines and, for a pickled file, advise retrying with ``weights_only=False``: advice that
must never reach a user holding a downloaded file. :func:`load_tensors` gives one short
reason instead.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class UnreadableTensorsFile(ValueError):
    """A .pt file that is corrupt, truncated, or holds more than tensors and plain data."""


def load_tensors(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors (UnreadableTensorsFile) that name ``path``."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise UnreadableTensorsFile(f"{path}: truncated or corrupt (not a torch.save file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnreadableTensorsFile(f"{path}: holds more than tensors and numbers; refused, since loading it could run code") from exc
    except Exception as exc:  # a corrupt archive member; torch's first sentence says which
        raise UnreadableTensorsFile(f"{path}: cannot be loaded ({str(exc).split('. ')[0]})") from exc
