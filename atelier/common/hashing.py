"""Digests shared by every stage: of files, and of named tensors (a model's identity)."""

from __future__ import annotations

import hashlib
import os
from typing import Mapping

import torch

CHUNK = 1 << 20  # stream in 1 MiB pieces: weight files run to hundreds of MB


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in chunks (memory stays flat for large files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors (names, dtypes, shapes, bytes) in sorted name order.

    Equal iff bit-identical, and a saved safetensors file hashes the same as the module it came
    from: this is the ``weights_sha256`` that generate writes into every PNG and eval into its
    report, so samples, reports and model cards can be matched up.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(module: torch.nn.Module) -> str:
    """:func:`tensors_sha256` of a module's state dict."""
    return tensors_sha256(module.state_dict())
