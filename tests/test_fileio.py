"""atelier.common.fileio: the one atomic-write helper every writer in gan/ and eval/ uses."""

import os

import pytest

from atelier.common.fileio import atomic_write, atomic_write_bytes, atomic_write_text


def test_writes_creates_parents_and_uses_normal_permissions(tmp_path):
    target = tmp_path / "a" / "b" / "report.json"
    assert atomic_write_text(target, "{}\n") == target
    assert target.read_text() == "{}\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600
    atomic_write_bytes(target, b"new", fsync=False)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "generator.safetensors"
    target.write_bytes(b"old")

    def half_then_crash(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # a kill mid-write, not just an Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["generator.safetensors"]
