"""Small traps (issue 19, point 8): grids counted as samples, a nan psi, private file modes."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.common.fileio import FILE_MODE, atomic_write, check_writable
from eval.samples import FolderImages
from gan import generate


def _png(path, size):
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(path)


def test_eval_samples_folder_skips_generate_grid_and_eval_nn_grid(tmp_path):
    for seed in range(3):
        _png(tmp_path / f"seed{seed:04d}-psi0.70.png", 16)
    _png(tmp_path / "grid.png", 48)  # what generate --grid writes beside the samples
    _png(tmp_path / "report_nn.png", 64)  # eval's memorisation grid, if --out was put here
    (tmp_path / "interp-seed0000-seed0001-psi0.70.gif").write_bytes(b"GIF89a")
    folder = FolderImages(tmp_path)
    assert [p.name for p in folder.files] == [f"seed{s:04d}-psi0.70.png" for s in range(3)]
    assert folder.resolution == 16 and folder[2].shape == (3, 16, 16)


@pytest.mark.parametrize("psi", ["nan", "inf", "-inf"])
def test_generate_non_finite_psi_is_a_one_line_error(psi, tmp_path, capsys):
    code = generate.main(["--checkpoint", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--seeds", "0", f"--psi={psi}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--psi must be a finite number" in err[0]
    assert not (tmp_path / "out").exists()


def test_safetensors_written_atomically_follow_the_umask(tmp_path):
    from safetensors.torch import save_file

    path = atomic_write(tmp_path / "generator.safetensors", lambda tmp: save_file({"w": torch.ones(2)}, str(tmp)))
    assert path.stat().st_mode & 0o777 == FILE_MODE  # safetensors alone makes it 0600


def test_write_check_names_the_cause_and_leaves_nothing(tmp_path):
    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # neither the probe nor the folders made for it are left
    (tmp_path / "kept").mkdir()
    check_writable(tmp_path / "kept")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        check_writable(tmp_path / "file" / "sub")
