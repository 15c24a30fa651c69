"""``atelier convert``, ``generate --checkpoint x.pkl`` and https/URL sources, end to end (offline:
a local HTTP server stands in for NVIDIA's CDN)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import threading

import numpy as np
import pytest
import torch
from nvidia_pickles import expected_image, load_case, pytorch_snapshot
from PIL import Image
from test_nvidia_parity import assert_same_image, paint

from atelier.common.hashing import file_sha256
from gan import convert, generate
from gan.export import describe_generator, load_generator
from gan.nvidia.remote import DownloadError, cache_name, fetch


@pytest.fixture(scope="module")
def c32():
    return load_case("c32")


@pytest.fixture()
def pkl(tmp_path, c32):
    path = tmp_path / "network-snapshot-000400.pkl"
    path.write_bytes(pytorch_snapshot(c32))
    return path


def test_convert_writes_an_export_that_never_needs_the_pickle(pkl, c32, tmp_path):
    out, ckpt = tmp_path / "models" / "c32.safetensors", tmp_path / "models" / "c32-ckpt"
    assert convert.main([str(pkl), "--out", str(out), "--checkpoint-dir", str(ckpt)]) == 0
    pkl.unlink()  # later loads never touch the pickle
    info = describe_generator(out)
    assert info["kind"] == "export" and info["resolution"] == 32 and info["model"]["mapping_layers"] == 2
    assert info["nvidia"]["format"] == "stylegan2-ada-pytorch" and len(info["nvidia"]["sha256"]) == 64
    for G in (load_generator(out), load_generator(ckpt)):
        assert_same_image(paint(G, 1, 0.7), expected_image(c32, 0.7, 1), "converted export")
    assert convert.main([str(tmp_path / "missing.pkl"), "--out", str(out)]) == 2  # exists: needs --force first
    assert not list(tmp_path.rglob("*.tmp"))


def test_convert_refuses_a_hostile_pickle_in_one_line(tmp_path, capsys):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _SystemCall()}))
    out = tmp_path / "x.safetensors"
    assert convert.main([str(evil), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier convert: error:") and "\n" not in err
    assert "system" in err and "nothing was loaded" in err and not out.exists()


class _SystemCall:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_generate_paints_nvidias_image_from_a_pkl(pkl, c32, tmp_path):
    out = tmp_path / "out"
    assert generate.main(["--checkpoint", str(pkl), "--seeds", "0-1", "--psi", "1", "--out", str(out), "--no-progress"]) == 0
    for seed in (0, 1):
        png = np.array(Image.open(out / f"seed{seed:04d}-psi1.00.png").convert("RGB"))
        assert_same_image(torch.from_numpy(png), expected_image(c32, 1.0, seed), f"generate seed {seed}")


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "cdn"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_url_downloads_once_into_the_cache(server, pkl, c32, tmp_path, monkeypatch, capsys):
    root, base = server
    (root / "stylegan2-c32.pkl").write_bytes(pkl.read_bytes())
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path / "cache"))
    url = f"{base}/stylegan2-c32.pkl"
    G = load_generator(url)
    assert_same_image(paint(G, 2, 1.0), expected_image(c32, 1.0, 2), "from a URL")
    cached = tmp_path / "cache" / "models" / cache_name(url)
    import hashlib

    digest = hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert cached.read_bytes() == pkl.read_bytes() and f"sha256 {digest}" in capsys.readouterr().out
    (root / "stylegan2-c32.pkl").unlink()  # the cache answers from now on
    path, again = fetch(url, tmp_path / "cache" / "models", progress=False)
    assert (path, again) == (cached, digest)
    out = tmp_path / "from-url.safetensors"
    assert convert.main([url, "--out", str(out)]) == 0
    assert json.loads(json.dumps(describe_generator(out)["nvidia"]))["url"] == url


def test_bad_urls_are_one_line_errors(server, tmp_path):
    root, base = server
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="only https"):
        fetch("http://example.com/model.pkl", cache)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{base}/missing.pkl", cache, progress=False)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written
    assert cache_name("https://x.org/a/../../etc/passwd%00.pkl").split("-", 1)[1] == "passwd_.pkl"


def test_init_from_url_is_fetched_and_recorded_as_the_cached_file(server, pkl, tmp_path, monkeypatch):
    from gan.transfer import pickle_overrides

    root, base = server
    (root / "ffhq-res32.pkl").write_bytes(pkl.read_bytes())
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path / "cache"))
    url = f"{base}/ffhq-res32.pkl"
    extra = pickle_overrides(url, None, [])
    cached = tmp_path / "cache" / "models" / cache_name(url)
    assert f"transfer.init_from={cached}" in extra and "data.resolution=32" in extra
    # config.yaml records where the weights came from and the sha256 of the bytes trained from
    assert f"transfer.init_url={url}" in extra and f"transfer.init_sha256={file_sha256(cached)}" in extra
    from gan.config import load_config

    cfg = load_config(None, extra)
    assert cfg.transfer.init_url == url and cfg.transfer.init_sha256 == file_sha256(cached)
