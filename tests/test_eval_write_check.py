"""eval and refine prove they can write their outputs before computing anything (issue 19, point 5)."""

import errno
import os

import pytest

import eval.__main__ as eval_cli


@pytest.fixture
def no_compute(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("metrics were computed before the output was known to be writable")

    monkeypatch.setattr(eval_cli, "evaluate", refuse)


def _run(out, tmp_path, capsys):
    samples = tmp_path / "samples"
    samples.mkdir(exist_ok=True)
    code = eval_cli.main(["--samples", str(samples), "--dataset", str(tmp_path / "ds"), "--out", str(out)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_eval_unwritable_out_is_one_line_exit_5_before_any_work(tmp_path, capsys, no_compute):
    (tmp_path / "a-file").write_text("x")
    code, err = _run(tmp_path / "a-file" / "report.json", tmp_path, capsys)
    assert code == 5 and len(err) == 1
    assert err[0].startswith("atelier eval: error: ") and str(tmp_path / "a-file" / "report.json") in err[0]


def test_eval_full_disk_is_named_before_any_work(tmp_path, capsys, no_compute, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, err = _run(tmp_path / "out" / "report.json", tmp_path, capsys)
    assert code == 5 and len(err) == 1 and "cannot write (disk full)" in err[0]
    assert not (tmp_path / "out").exists()  # neither the probe file nor the folder made for it is left


def test_refine_unwritable_out_is_one_line_exit_5_before_vgg_loads(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    import eval.refine as refine

    def refuse(*args, **kwargs):
        raise AssertionError("VGG19 loaded before the output was known to be writable")

    monkeypatch.setattr(refine, "load_vgg19", refuse)
    rng = np.random.default_rng(0)
    for folder, name in (("samples", "s.png"), ("works", "w.png")):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / folder / name)
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "refined"
    code = refine.main(
        ["--input", str(tmp_path / "samples"), "--style", str(tmp_path / "works" / "w.png"), "--out", str(out), "--size", "32"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and err[0].startswith("atelier refine: error: ") and str(out) in err[0]
