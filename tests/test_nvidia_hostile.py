"""The pickle reader never runs anything from a file: hostile and broken files are one-line refusals.

A real pickle loader would run every payload below (a shell command that creates a marker
file); each test checks the refusal message and that the marker never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import subprocess

import pytest
import torch
from nvidia_pickles import expected_image, load_case, pytorch_snapshot, tf_snapshot
from test_nvidia_parity import assert_same_image, paint

from gan.export import GeneratorLoadError, load_generator
from gan.nvidia.convert import UnsupportedNetwork, load_pickle_networks
from gan.nvidia.unpickler import PickleRefused, read_network_pickle


@pytest.fixture()
def marker(tmp_path):
    path = tmp_path / "PAYLOAD-RAN"
    yield path
    assert not path.exists(), "a payload from the pickle was executed"


def refused(path, *fragments: str, error=PickleRefused) -> str:
    with pytest.raises(error) as info:
        read_network_pickle(path) if error is PickleRefused else load_pickle_networks(path)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_reduce_calling_os_system_is_refused(tmp_path, marker):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(os.system, f"touch {marker}")}))
    refused(path, f"{os.system.__module__}.system", "not on the allow-list", "nothing was loaded")


@pytest.mark.parametrize(
    "func, args, name",
    [
        (eval, ("__import__('os').system('touch {marker}')",), "builtins.eval"),
        (exec, ("open('{marker}', 'w')",), "builtins.exec"),
        (subprocess.call, (["touch", "{marker}"],), "subprocess.call"),
        (subprocess.Popen, (["touch", "{marker}"],), "subprocess.Popen"),
        (getattr, ("{marker}", "upper"), "builtins.getattr"),
        (__import__, ("os",), "builtins.__import__"),
    ],
)
def test_dangerous_globals_are_refused(tmp_path, marker, func, args, name):
    args = tuple(
        a.format(marker=marker) if isinstance(a, str) else [x.format(marker=marker) for x in a] if isinstance(a, list) else a for a in args
    )
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([1, 2, _Reduce(func, *args)], protocol=2))
    refused(path, name, "nothing was loaded")


def test_payload_hidden_in_a_storage_blob_is_refused(tmp_path, marker):
    # torch.storage._load_from_bytes is allowed, but its bytes go to torch's tensors-only reader.
    inner = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Reduce(torch.storage._load_from_bytes, inner)))
    refused(path, "embedded tensor storage is unreadable", "nothing was loaded")


def test_genuine_snapshot_with_a_payload_in_its_source_loads_and_paints(tmp_path, marker):
    case = load_case("c32")
    payload = f"import os\nos.system('touch {marker}')\nopen({str(marker)!r}, 'w').write('ran')\n"
    path = tmp_path / "trojan.pkl"
    path.write_bytes(pytorch_snapshot(case, module_src=payload))
    G = load_generator(path)
    assert_same_image(paint(G, 0, 1.0), expected_image(case, 1.0, 0), "trojan snapshot")
    src = read_network_pickle(path)
    assert src.G_ema.class_name == "Generator"  # the source stayed a string: read, never run


def test_broken_files_are_one_line_errors(tmp_path):
    good = pytorch_snapshot(load_case("c32"))
    cases = {
        "empty.pkl": (b"", "empty file"),
        "truncated.pkl": (good[: len(good) // 2], "truncated"),
        "random.pkl": (random.Random(0).randbytes(4096), "not a network pickle"),
        "random-header.pkl": (b"\x80\x04" + random.Random(1).randbytes(4096), "pickle"),
    }
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(3)}, buf)
    cases["torch.pkl"] = (buf.getvalue(), "zip archive")
    for name, (data, fragment) in cases.items():
        (tmp_path / name).write_bytes(data)
        refused(tmp_path / name, fragment, "nothing was loaded")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    refused(tmp_path / "list.pkl", "not an NVIDIA network pickle")


def test_generate_path_reports_a_refusal_as_a_load_error(tmp_path, marker):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Reduce(os.system, f"touch {marker}")))
    with pytest.raises(GeneratorLoadError, match="nothing was loaded"):
        load_generator(path)


def test_setting_state_of_a_non_stand_in_is_refused(tmp_path):
    # BUILD on an OrderedDict would be harmless, but only the stand-ins may receive state.
    data = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R}\x8c\x01a\x4b\x01sb."
    (tmp_path / "build.pkl").write_bytes(data)
    refused(tmp_path / "build.pkl", "sets the state of a OrderedDict")


# ------------------------------------------------------------------ networks atelier lacks


def _variant(tmp_path, name="variant.pkl", **kwargs):
    path = tmp_path / name
    path.write_bytes(pytorch_snapshot(load_case("c32"), **kwargs))
    return path


def test_unsupported_networks_are_named(tmp_path):
    case = load_case("c32")
    gk = case["G_kwargs"]
    conditional = dict(gk, c_dim=10)
    refused(_variant(tmp_path, G_kwargs=conditional), "conditional generator (c_dim=10)", error=UnsupportedNetwork)
    orig = dict(gk, synthesis_kwargs=dict(gk["synthesis_kwargs"], architecture="orig"))
    refused(_variant(tmp_path, G_kwargs=orig), "architecture='orig'", error=UnsupportedNetwork)
    sg3 = dict(gk, synthesis_kwargs=dict(gk["synthesis_kwargs"], use_radial_filters=True))
    refused(_variant(tmp_path, G_kwargs=sg3), "use_radial_filters", error=UnsupportedNetwork)
    refused(_variant(tmp_path, G_kwargs=dict(gk, magnitude_ema_beta=0.999)), "magnitude_ema_beta", error=UnsupportedNetwork)
    sg3_layers = {k.replace("synthesis.b4.", "synthesis.input."): v for k, v in case["G"].items()}
    refused(_variant(tmp_path, G_tensors=sg3_layers), "StyleGAN3", error=UnsupportedNetwork)
    refused(_variant(tmp_path, G_class="SuperresGenerator"), "'SuperresGenerator'", error=UnsupportedNetwork)


def test_unsupported_tensorflow_networks_are_named(tmp_path):
    case = load_case("c32")
    variants = {
        "config-d.pkl": (dict(synthesis_func="G_synthesis_stylegan_revised"), "configs A-D"),
        "stylegan1.pkl": (dict(g_func="G_style"), "StyleGAN (v1)"),
        "other-d.pkl": (dict(d_func="D_basic"), "'D_basic'"),
        "conditional.pkl": (dict(g_static_extra={"label_size": 10}), "conditional TensorFlow generator"),
        "resnet-g.pkl": (dict(g_static_extra={"architecture": "resnet"}), "architecture='resnet'"),
    }
    for name, (kwargs, fragment) in variants.items():
        (tmp_path / name).write_bytes(tf_snapshot(case, **kwargs))
        refused(tmp_path / name, fragment, error=UnsupportedNetwork)
    old = tf_snapshot(case).replace(b"version", b"vErsion")  # no version 4+: an older TF network
    (tmp_path / "old.pkl").write_bytes(old)
    refused(tmp_path / "old.pkl", "too old")
