"""Build NVIDIA-format network pickles for the tests, from numbers only.

The fixtures in ``tests/fixtures/nvidia/`` hold a small StyleGAN2-ADA network's tensors under
NVIDIA's names, its init kwargs and what NVIDIA's own code painted with it (see
``make_fixtures.py``). This module rebuilds pickles of the same structure as NVIDIA's files:

- the StyleGAN2-ADA (PyTorch) snapshot: a dict of ``torch_utils.persistence`` objects, each
  carrying ``module_src`` (here a stand-in string of our own, never NVIDIA's source),
  ``class_name`` and the module's ``__dict__`` state, with real torch Parameters inside;
- the StyleGAN2 (TensorFlow) tuple of three ``dnnlib.tflib.network.Network`` states, with the
  variables named as TensorFlow StyleGAN2 names them and numpy arrays as values.

The NVIDIA module names exist only while pickling (stand-in modules put in ``sys.modules`` and
removed again), so a reader that tried to import them would fail.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from safetensors import safe_open

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nvidia"
CASES = ("c32", "c64", "c256")
STANDIN_SRC = "# stand-in module source written by atelier's tests; a reader must never run it\n"
_BUFFERS = ("noise_const", "w_avg", "resample_filter")
_CHILD_CLASS = {
    "mapping": "MappingNetwork",
    "synthesis": "SynthesisNetwork",
    "affine": "FullyConnectedLayer",
    "torgb": "ToRGBLayer",
    "fromrgb": "Conv2dLayer",
    "skip": "Conv2dLayer",
    "fc": "FullyConnectedLayer",
    "out": "FullyConnectedLayer",
    "conv": "Conv2dLayer",
    "mbstd": "MinibatchStdLayer",
}


def load_case(name: str) -> dict[str, Any]:
    """A fixture case: ``G`` / ``D`` tensors (fp32, NVIDIA names), kwargs, expected images and logits."""
    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    case = {
        "G_kwargs": json.loads(meta["G_init_kwargs"]),
        "D_kwargs": json.loads(meta["D_init_kwargs"]),
        "seeds": json.loads(meta["seeds"]),
        "psis": json.loads(meta["psis"]),
        "G": {k[6:]: v.float() for k, v in tensors.items() if k.startswith("G_ema.")},
        "D": {k[2:]: v.float() for k, v in tensors.items() if k.startswith("D.")},
        "images": {k: v for k, v in tensors.items() if k.startswith("expected.image.")},
        "D_logits": tensors["expected.D_logits"],
    }
    case["resolution"] = case["G_kwargs"]["img_resolution"]
    return case


def expected_image(case: dict, psi: float, seed: int) -> torch.Tensor:
    return case["images"][f"expected.image.psi{psi:g}.seed{seed}"]


def d_inputs(resolution: int) -> torch.Tensor:
    """The images the fixture's D logits were computed for."""
    return torch.from_numpy(np.random.RandomState(123).randn(4, 3, resolution, resolution).astype(np.float32))


# --------------------------------------------------------------------------- stand-in NVIDIA modules


def _fake_modules() -> dict[str, types.ModuleType]:
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")
    network = types.ModuleType("dnnlib.tflib.network")

    def _reconstruct_persistent_obj(meta):  # never called: the reader has its own stand-in
        raise AssertionError("the test stand-in must not be called")

    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, "EasyDict"
    util.EasyDict = EasyDict

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__, Network.__qualname__ = network.__name__, "Network"
    network.Network = Network
    mods = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
        "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
        "dnnlib.tflib.network": network,
    }
    return mods


@contextlib.contextmanager
def nvidia_names() -> Iterator[dict[str, types.ModuleType]]:
    """Stand-in NVIDIA modules in sys.modules while a pickle is written; removed afterwards."""
    mods = _fake_modules()
    clash = [m for m in mods if m in sys.modules]
    assert not clash, f"real NVIDIA modules are importable here: {clash}"
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for name in mods:
            sys.modules.pop(name, None)


class _Persistent:
    """Pickles as NVIDIA's ``@persistent_class`` objects do: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, state: dict, module_src: str, reconstruct) -> None:
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)
        self.reconstruct = reconstruct

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def _easy(obj: Any, easydict: type) -> Any:
    if isinstance(obj, dict):
        return easydict({k: _easy(v, easydict) for k, v in obj.items()})
    return obj


def _module_tree(tensors: dict[str, torch.Tensor], resolution: int, net: str) -> dict:
    """Nested {child: {...}} with '__tensors__' per module, as NVIDIA's module tree holds them."""
    root: dict = {}
    for name, t in tensors.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault("__tensors__", {})[leaf] = t
    # NVIDIA's blocks carry their [1, 3, 3, 1] resample filter as a (saved) buffer.
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    filt = torch.outer(f, f) / torch.outer(f, f).sum()
    blocks = root.get("synthesis", {}) if net == "G" else root
    for key, node in blocks.items():
        if key.startswith("b") and key[1:].isdigit() and key != "b4":
            node.setdefault("__tensors__", {})["resample_filter"] = filt.clone()
    return root


def _persistent_tree(node: dict, class_name: str, module_src: str, reconstruct, extra_state: Optional[dict] = None) -> _Persistent:
    params, buffers = OrderedDict(), OrderedDict()
    for leaf, t in node.get("__tensors__", {}).items():
        if leaf in _BUFFERS:
            buffers[leaf] = t.clone()
        else:
            params[leaf] = torch.nn.Parameter(t.clone(), requires_grad=False)
    modules = OrderedDict()
    for child, sub in node.items():
        if child == "__tensors__":
            continue
        cls = _CHILD_CLASS.get(child) or ("SynthesisBlock" if child.startswith("b") else "SynthesisLayer")
        modules[child] = _persistent_tree(sub, cls, module_src, reconstruct)
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": modules,
        "weight_gain": np.float64(1 / math.sqrt(3)),
        "activation": "lrelu",  # numpy scalars, as NVIDIA's modules hold
    }
    state.update(extra_state or {})
    return _Persistent(class_name, state, module_src, reconstruct)


def pytorch_snapshot(
    case: dict,
    module_src: str = STANDIN_SRC,
    G_kwargs: Optional[dict] = None,
    D_kwargs: Optional[dict] = None,
    G_tensors: Optional[dict] = None,
    G_class: str = "Generator",
) -> bytes:
    """The bytes of a StyleGAN2-ADA ``network-snapshot-*.pkl`` holding the case's networks.

    G (the trained generator) gets the G_ema weights halved, so a test can tell them apart.
    """
    res = case["resolution"]
    G_ema = G_tensors if G_tensors is not None else case["G"]
    G = {k: (v * 0.5 if not k.endswith(("noise_const", "w_avg")) else v) for k, v in G_ema.items()}
    with nvidia_names() as mods:
        rec, easy = mods["torch_utils.persistence"]._reconstruct_persistent_obj, mods["dnnlib.util"].EasyDict
        gk = _easy(G_kwargs if G_kwargs is not None else case["G_kwargs"], easy)
        dk = _easy(D_kwargs if D_kwargs is not None else case["D_kwargs"], easy)

        def net(tensors, kind, cls, kwargs):
            extra = {"_init_args": (), "_init_kwargs": dict(kwargs), "img_resolution": res, "z_dim": kwargs.get("z_dim")}
            return _persistent_tree(_module_tree(tensors, res, kind), cls, module_src, rec, extra)

        snapshot = dict(
            training_set_kwargs=easy(path="datasets/paintings.zip", resolution=res, use_labels=False),
            G=net(G, "G", G_class, gk),
            D=net(case["D"], "D", "Discriminator", dk),
            G_ema=net(G_ema, "G", G_class, gk),
            augment_pipe=None,
        )
        return pickle.dumps(snapshot, protocol=4)


# --------------------------------------------------------------------------- TensorFlow


def tf_variables(case: dict, net: str) -> dict[str, np.ndarray]:
    """The case's weights under StyleGAN2 (TF) variable names and layouts (HWIO kernels, [in, out] dense,
    modulation bias stored minus 1, constant noise as synthesis/noiseN [1, 1, r, r])."""
    res = case["resolution"]
    t = {k: v.numpy() for k, v in case[net].items()}
    conv = lambda w: w.transpose(2, 3, 1, 0)  # noqa: E731  [O, I, kh, kw] -> [kh, kw, I, O]
    out: dict[str, np.ndarray] = {}
    if net == "G":
        out["dlatent_avg"] = t["mapping.w_avg"]
        for i in range(case["G_kwargs"]["mapping_kwargs"]["num_layers"]):
            out[f"mapping/Dense{i}/weight"] = t[f"mapping.fc{i}.weight"].T
            out[f"mapping/Dense{i}/bias"] = t[f"mapping.fc{i}.bias"]
        for k in range(2, int(math.log2(res)) + 1):
            r = 2**k
            s, b = f"synthesis/{r}x{r}", f"synthesis.b{r}"
            if r == 4:
                out[f"{s}/Const/const"] = t[f"{b}.const"][None]
                layers = [("conv1", "Conv", 0)]
            else:
                layers = [("conv0", "Conv0_up", 2 * k - 5), ("conv1", "Conv1", 2 * k - 4)]
            for layer, scope, noise in layers:
                w = t[f"{b}.{layer}.weight"]
                if layer == "conv0":  # TF's transposed-conv kernel is ADA's reversed in space
                    w = w[:, :, ::-1, ::-1]
                out[f"{s}/{scope}/weight"] = conv(w)
                out[f"{s}/{scope}/bias"] = t[f"{b}.{layer}.bias"]
                out[f"{s}/{scope}/noise_strength"] = t[f"{b}.{layer}.noise_strength"]
                out[f"{s}/{scope}/mod_weight"] = t[f"{b}.{layer}.affine.weight"].T
                out[f"{s}/{scope}/mod_bias"] = t[f"{b}.{layer}.affine.bias"] - 1
                out[f"synthesis/noise{noise}"] = t[f"{b}.{layer}.noise_const"][None, None]
            out[f"{s}/ToRGB/weight"] = conv(t[f"{b}.torgb.weight"])
            out[f"{s}/ToRGB/bias"] = t[f"{b}.torgb.bias"]
            out[f"{s}/ToRGB/mod_weight"] = t[f"{b}.torgb.affine.weight"].T
            out[f"{s}/ToRGB/mod_bias"] = t[f"{b}.torgb.affine.bias"] - 1
    else:
        for k in range(int(math.log2(res)), 2, -1):
            r = 2**k
            s, b = f"{r}x{r}", f"b{r}"
            if r == res:
                out[f"{s}/FromRGB/weight"] = conv(t[f"{b}.fromrgb.weight"])
                out[f"{s}/FromRGB/bias"] = t[f"{b}.fromrgb.bias"]
            out[f"{s}/Conv0/weight"] = conv(t[f"{b}.conv0.weight"])
            out[f"{s}/Conv0/bias"] = t[f"{b}.conv0.bias"]
            out[f"{s}/Conv1_down/weight"] = conv(t[f"{b}.conv1.weight"])
            out[f"{s}/Conv1_down/bias"] = t[f"{b}.conv1.bias"]
            out[f"{s}/Skip/weight"] = conv(t[f"{b}.skip.weight"])
        out["4x4/Conv/weight"] = conv(t["b4.conv.weight"])
        out["4x4/Conv/bias"] = t["b4.conv.bias"]
        out["4x4/Dense0/weight"] = t["b4.fc.weight"].T
        out["4x4/Dense0/bias"] = t["b4.fc.bias"]
        out["Output/weight"] = t["b4.out.weight"].T
        out["Output/bias"] = t["b4.out.bias"]
    return {k: np.array(v, dtype=np.float32, order="C") for k, v in out.items()}  # 0-d stays 0-d


def tf_snapshot(
    case: dict,
    build_module_src: str = STANDIN_SRC,
    synthesis_func: str = "G_synthesis_stylegan2",
    g_static_extra: Optional[dict] = None,
    g_func: str = "G_main",
    d_func: str = "D_stylegan2",
) -> bytes:
    """The bytes of a StyleGAN2 (TF) ``*.pkl``: a (G, D, Gs) tuple of Network states."""
    gk, dk = case["G_kwargs"], case["D_kwargs"]
    sk = gk["synthesis_kwargs"]
    g_static = dict(
        latent_size=gk["z_dim"],
        dlatent_size=gk["w_dim"],
        resolution=gk["img_resolution"],
        num_channels=gk["img_channels"],
        mapping_layers=gk["mapping_kwargs"]["num_layers"],
        fmap_base=sk["channel_base"] // 2,
        fmap_max=sk["channel_max"],
        label_size=0,
    )
    if sk.get("conv_clamp") is not None:
        g_static.update(conv_clamp=sk["conv_clamp"], num_fp16_res=sk.get("num_fp16_res", 0))
    g_static.update(g_static_extra or {})
    d_static = dict(
        resolution=dk["img_resolution"],
        num_channels=3,
        fmap_base=dk["channel_base"] // 2,
        fmap_max=dk["channel_max"],
        mbstd_group_size=dk["epilogue_kwargs"]["mbstd_group_size"],
        label_size=0,
    )
    if dk.get("conv_clamp") is not None:
        d_static.update(conv_clamp=dk["conv_clamp"])
    gvars, dvars = tf_variables(case, "G"), tf_variables(case, "D")
    with nvidia_names() as mods:
        Network = mods["dnnlib.tflib.network"].Network

        def network(name, func, static, variables, components=None):
            return Network(
                dict(
                    version=4,
                    name=name,
                    static_kwargs=static,
                    components=components or {},
                    build_module_src=build_module_src,
                    build_func_name=func,
                    variables=list(variables.items()),
                )
            )

        def generator(name):
            mapping = network("G_mapping", "G_mapping", g_static, {k[8:]: v for k, v in gvars.items() if k.startswith("mapping/")})
            synthesis = network(
                "G_synthesis", synthesis_func, g_static, {k[10:]: v for k, v in gvars.items() if k.startswith("synthesis/")}
            )
            own = {"dlatent_avg": gvars["dlatent_avg"], "lod": np.float32(0)}
            return network(name, g_func, dict(g_static, truncation_psi=0.5), own, {"mapping": mapping, "synthesis": synthesis})

        nets = (generator("G"), network("D", d_func, d_static, dvars), generator("Gs"))
        return pickle.dumps(nets, protocol=3)
