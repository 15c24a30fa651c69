"""NVIDIA StyleGAN2 networks (as read by :mod:`gan.nvidia.unpickler`) -> atelier's networks.

The architecture comes from the pickle: the init kwargs of a StyleGAN2-ADA (PyTorch) network,
or the static kwargs of a StyleGAN2 (TensorFlow) one, become a :class:`~gan.config.ModelConfig`,
resolution and image channels. The tensors are renamed to atelier's state-dict keys by
:func:`nvidia_to_atelier_name`, which issue 20's gradient-parity test imports too: it says, for
one NVIDIA parameter name, which atelier tensor holds the same numbers and whether its 3x3
kernel is spatially flipped (NVIDIA's upsampling convs are true convolutions, atelier's convs
are all cross-correlations).

TensorFlow variables are first put under the PyTorch-ADA names and layouts
(:func:`tf_to_nvidia_tensors`: HWIO kernels to OIHW, ``mod_bias`` + 1, the ``noiseN`` maps to
their layers), so both formats share one path. What atelier cannot represent (StyleGAN3,
StyleGAN-XL, StyleGAN1, configs A-D, 'orig'/'resnet' generators, conditional models, ...) is a
one-line :class:`UnsupportedNetwork` naming what was found.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from gan.config import ModelConfig
from gan.layers import fir_filter
from gan.networks import Discriminator, Generator
from gan.nvidia.unpickler import PT_FORMAT, TF_FORMAT, NetworkPickle, NetworkState, PickleRefused, read_network_pickle


class UnsupportedNetwork(PickleRefused):
    """The pickle is readable but holds a network atelier cannot represent (one line)."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class ParamMapping:
    """Where an NVIDIA tensor lives in atelier: the state-dict key, and whether the kernel's two
    spatial axes are reversed (``tensor.flip([-2, -1])``) on the way (NVIDIA conv0 = up-conv)."""

    name: str
    flip: bool = False


_G_LAYER = {
    "affine.weight": "affine.weight",
    "affine.bias": "affine.bias",
    "weight": "weight",
    "bias": "bias",
    "noise_const": "noise.const",
    "noise_strength": "noise.strength",
}


def nvidia_to_atelier_name(net: str, name: str, img_resolution: int) -> Optional[ParamMapping]:
    """Map one StyleGAN2-ADA (PyTorch) parameter/buffer name of ``net`` ("G" or "D"; G_ema is a G)
    to atelier's state-dict key.

    Returns None for NVIDIA's ``resample_filter`` buffers (atelier builds the same [1, 3, 3, 1]
    filter itself); raises :class:`UnsupportedNetwork` for a name atelier has no tensor for
    (e.g. a label embedding or a 'skip' discriminator's FromRGB at 4x4).

    Examples (256 px): ``mapping.fc0.weight`` -> ``mapping.layers.0.weight``;
    ``synthesis.b8.conv0.weight`` -> ``synthesis.blocks.1.conv0.weight`` (flipped);
    ``synthesis.b4.conv1.noise_const`` -> ``synthesis.blocks.0.conv1.noise.const``;
    ``b256.fromrgb.weight`` (D) -> ``blocks.0.fromrgb.weight``; ``b4.out.bias`` -> ``epilogue.out.bias``.
    """
    if name.endswith("resample_filter"):
        return None
    log_r = int(math.log2(img_resolution))
    if net in ("G", "G_ema"):
        if name == "mapping.w_avg":
            return ParamMapping("mapping.w_avg")
        m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name)
        if m:
            return ParamMapping(f"mapping.layers.{m[1]}.{m[2]}")
        m = re.fullmatch(r"synthesis\.b(\d+)\.(.+)", name)
        if m and _is_pow2(int(m[1])):
            block = f"synthesis.blocks.{int(math.log2(int(m[1]))) - 2}"
            rest = m[2]
            if rest == "const":
                return ParamMapping(f"{block}.const")
            m2 = re.fullmatch(r"(conv0|conv1|torgb)\.(.+)", rest)
            if m2 and m2[2] in _G_LAYER and not (m2[1] == "torgb" and "noise" in m2[2]):
                return ParamMapping(f"{block}.{m2[1]}.{_G_LAYER[m2[2]]}", flip=(m2[1] == "conv0" and m2[2] == "weight"))
    elif net == "D":
        m = re.fullmatch(r"b4\.(conv|fc|out)\.(weight|bias)", name)
        if m:
            return ParamMapping(f"epilogue.{m[1]}.{m[2]}")
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip)\.(weight|bias)", name)
        if m and _is_pow2(int(m[1])) and int(m[1]) > 4:
            return ParamMapping(f"blocks.{log_r - int(math.log2(int(m[1])))}.{m[2]}.{m[3]}")
    else:
        raise ValueError(f"net must be 'G', 'G_ema' or 'D', got {net!r}")
    raise UnsupportedNetwork(f"{net} tensor {name!r} has no counterpart in atelier's networks")


def _is_pow2(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


def nvidia_to_atelier_state(net: str, tensors: Mapping[str, torch.Tensor], img_resolution: int) -> dict[str, torch.Tensor]:
    """Rename (and flip where needed) a whole NVIDIA state dict into atelier's keys, fp32, contiguous."""
    out: dict[str, torch.Tensor] = {}
    default = torch.outer(fir_filter(), fir_filter())
    for name, t in tensors.items():
        mapping = nvidia_to_atelier_name(net, name, img_resolution)
        if mapping is None:
            f = t.float()
            if f.shape != default.shape or not torch.allclose(f / f.sum(), default, atol=1e-6):
                raise UnsupportedNetwork(f"{net} uses resample filter {f.tolist()}; atelier has [1, 3, 3, 1] only")
            continue
        value = t.detach().float()
        if mapping.flip:
            value = value.flip([-2, -1])
        out[mapping.name] = value.contiguous().clone()
    return out


# --------------------------------------------------------------------------- TensorFlow layout


def tf_to_nvidia_tensors(net: str, tf: Mapping[str, torch.Tensor], img_resolution: int) -> dict[str, torch.Tensor]:
    """StyleGAN2 (TF) variables of ``net`` ("G" or "D") under StyleGAN2-ADA (PyTorch) names and layouts.

    TF kernels are [kh, kw, in, out] -> [out, in, kh, kw]; dense [in, out] -> [out, in]; the
    modulation bias is stored minus its init of 1; TF's upsampling conv kernel is reversed in
    space relative to ADA's (ADA's ``legacy.py`` documents the same layout).
    """

    def conv(w: torch.Tensor) -> torch.Tensor:
        return w.permute(3, 2, 0, 1)

    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in tf:
            raise UnsupportedNetwork(f"TensorFlow {net} has no variable {key!r} (not a StyleGAN2 config-e/f network?)")
        used.add(key)
        return tf[key]

    log_r = int(math.log2(img_resolution))
    if any(re.fullmatch(r"(.*/)?(ToRGB|FromRGB)_lod\d+/.*", k) for k in tf):
        raise UnsupportedNetwork(f"TensorFlow {net} has the 'orig' architecture (ToRGB/FromRGB per lod); atelier has skip G / resnet D")
    if net == "G":
        out["mapping.w_avg"] = take("dlatent_avg")
        i = 0
        while f"mapping/Dense{i}/weight" in tf:
            out[f"mapping.fc{i}.weight"] = take(f"mapping/Dense{i}/weight").t()
            out[f"mapping.fc{i}.bias"] = take(f"mapping/Dense{i}/bias")
            i += 1
        for r in (2**k for k in range(2, log_r + 1)):
            s, b = f"synthesis/{r}x{r}", f"synthesis.b{r}"
            layers = [("conv1", f"{s}/Conv", 0)] if r == 4 else [("conv0", f"{s}/Conv0_up", 5), ("conv1", f"{s}/Conv1", 4)]
            if r == 4:
                out[f"{b}.const"] = take(f"{s}/Const/const")[0]
            for layer, scope, noise_off in layers:
                w = conv(take(f"{scope}/weight"))
                out[f"{b}.{layer}.weight"] = w.flip([-2, -1]) if layer == "conv0" else w
                out[f"{b}.{layer}.bias"] = take(f"{scope}/bias")
                out[f"{b}.{layer}.noise_strength"] = take(f"{scope}/noise_strength")
                out[f"{b}.{layer}.affine.weight"] = take(f"{scope}/mod_weight").t()
                out[f"{b}.{layer}.affine.bias"] = take(f"{scope}/mod_bias") + 1
                noise = 0 if r == 4 else 2 * int(math.log2(r)) - noise_off
                out[f"{b}.{layer}.noise_const"] = take(f"synthesis/noise{noise}")[0, 0]
            out[f"{b}.torgb.weight"] = conv(take(f"{s}/ToRGB/weight"))
            out[f"{b}.torgb.bias"] = take(f"{s}/ToRGB/bias")
            out[f"{b}.torgb.affine.weight"] = take(f"{s}/ToRGB/mod_weight").t()
            out[f"{b}.torgb.affine.bias"] = take(f"{s}/ToRGB/mod_bias") + 1
    else:
        for r in (2**k for k in range(log_r, 2, -1)):
            s, b = f"{r}x{r}", f"b{r}"
            if r == img_resolution:
                out[f"{b}.fromrgb.weight"] = conv(take(f"{s}/FromRGB/weight"))
                out[f"{b}.fromrgb.bias"] = take(f"{s}/FromRGB/bias")
            for layer, scope in (("conv0", "Conv0"), ("conv1", "Conv1_down")):
                out[f"{b}.{layer}.weight"] = conv(take(f"{s}/{scope}/weight"))
                out[f"{b}.{layer}.bias"] = take(f"{s}/{scope}/bias")
            out[f"{b}.skip.weight"] = conv(take(f"{s}/Skip/weight"))
        out["b4.conv.weight"] = conv(take("4x4/Conv/weight"))
        out["b4.conv.bias"] = take("4x4/Conv/bias")
        out["b4.fc.weight"] = take("4x4/Dense0/weight").t()
        out["b4.fc.bias"] = take("4x4/Dense0/bias")
        out["b4.out.weight"] = take("Output/weight").t()
        out["b4.out.bias"] = take("Output/bias")
    leftover = sorted(k for k in tf if k not in used and not k.endswith("lod"))
    if leftover:
        raise UnsupportedNetwork(f"TensorFlow {net} has variable {leftover[0]!r}, which atelier's networks lack")
    return {k: v.contiguous() for k, v in out.items()}


# --------------------------------------------------------------------------- architecture


@dataclass
class Architecture:
    """What atelier needs to build the networks of a pickle."""

    model: ModelConfig
    resolution: int
    img_channels: int
    num_fp16_res: int = 0  # NVIDIA's fp16 layers (atelier computes them in fp32 or under autocast)


def _get(d: Mapping[str, Any], key: str, default: Any) -> Any:
    value = d.get(key, default)
    return default if value is None and default is not None else value


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise UnsupportedNetwork(what)


def architecture_from_pytorch(G: NetworkState, D: Optional[NetworkState]) -> Architecture:
    """ModelConfig, resolution and channels from StyleGAN2-ADA init kwargs (NVIDIA's defaults where absent)."""
    _check(G.class_name == "Generator", f"found generator class {G.class_name!r}; atelier reads StyleGAN2-ADA's 'Generator'")
    synth_children = G.children.get("synthesis", [])
    if "input" in synth_children or any(c.startswith("L") and "_" in c for c in synth_children):
        raise UnsupportedNetwork(
            "found a StyleGAN3-type (alias-free) generator (StyleGAN3 or StyleGAN-XL); "
            "atelier reads StyleGAN2-ADA and StyleGAN2 (TF) networks"
        )
    k = G.kwargs
    unknown_top = sorted(set(k) - {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"})
    if unknown_top:
        raise UnsupportedNetwork(
            f"generator option {unknown_top[0]}={k.get(unknown_top[0])!r} is unknown to StyleGAN2-ADA (a StyleGAN3 or StyleGAN-XL network?)"
        )
    mk, sk = k.get("mapping_kwargs") or {}, k.get("synthesis_kwargs") or {}
    _check(_get(k, "c_dim", 0) == 0, f"found a conditional generator (c_dim={k.get('c_dim')}); atelier paints unconditional models only")
    res = k.get("img_resolution")
    _check(
        isinstance(res, int) and _is_pow2(res) and 8 <= res <= 1024, f"generator img_resolution {res!r} is not a power of two in 8..1024"
    )
    arch = _get(sk, "architecture", "skip")
    _check(arch == "skip", f"found a generator with architecture={arch!r}; atelier's generator is 'skip'")
    _check(
        list(_get(sk, "resample_filter", [1, 3, 3, 1])) == [1, 3, 3, 1],
        f"generator resample_filter {sk.get('resample_filter')} is not [1, 3, 3, 1]",
    )
    _check(_get(sk, "activation", "lrelu") == "lrelu", f"generator activation {sk.get('activation')!r} is not lrelu")
    _check(_get(mk, "activation", "lrelu") == "lrelu", f"mapping activation {mk.get('activation')!r} is not lrelu")
    w_dim = k.get("w_dim")
    _check(_get(mk, "layer_features", w_dim) == w_dim, f"mapping layer_features={mk.get('layer_features')} differs from w_dim={w_dim}")
    _check(_get(sk, "kernel_size", 3) == 3, "generator kernel_size is not 3")
    unknown = sorted(
        set(sk)
        - {
            "channel_base",
            "channel_max",
            "num_fp16_res",
            "conv_clamp",
            "architecture",
            "resample_filter",
            "use_noise",
            "activation",
            "fp16_channels_last",
            "kernel_size",
        }
    )
    if unknown:
        raise UnsupportedNetwork(
            f"generator option {unknown[0]}={sk.get(unknown[0])!r} is unknown to StyleGAN2-ADA (a StyleGAN3 or StyleGAN-XL network?)"
        )
    model = dict(
        z_dim=k.get("z_dim"),
        w_dim=w_dim,
        mapping_layers=_get(mk, "num_layers", 8),
        mapping_lr_mul=float(_get(mk, "lr_multiplier", 0.01)),
        channel_base=_get(sk, "channel_base", 32768),
        channel_max=_get(sk, "channel_max", 512),
        conv_clamp=sk.get("conv_clamp"),
        mbstd_group=4,
    )
    if D is not None:
        _check(
            D.class_name == "Discriminator", f"found discriminator class {D.class_name!r}; atelier reads StyleGAN2-ADA's 'Discriminator'"
        )
        dk = D.kwargs
        ek, bk = dk.get("epilogue_kwargs") or {}, dk.get("block_kwargs") or {}
        _check(_get(dk, "c_dim", 0) == 0, f"found a conditional discriminator (c_dim={dk.get('c_dim')})")
        _check(
            _get(dk, "architecture", "resnet") == "resnet",
            f"found a discriminator with architecture={dk.get('architecture')!r}; atelier's is 'resnet'",
        )
        _check(dk.get("img_resolution") == res, f"D resolution {dk.get('img_resolution')} differs from G's {res}")
        for key, default in (("channel_base", 32768), ("channel_max", 512)):
            _check(
                _get(dk, key, default) == model[key],
                f"D {key}={_get(dk, key, default)} differs from G's {model[key]}; atelier shares one value",
            )
        _check(dk.get("conv_clamp") == model["conv_clamp"], f"D conv_clamp={dk.get('conv_clamp')} differs from G's {model['conv_clamp']}")
        _check(_get(ek, "mbstd_num_channels", 1) == 1, f"D mbstd_num_channels={ek.get('mbstd_num_channels')}; atelier has 1")
        _check(_get(bk, "activation", "lrelu") == "lrelu", "D activation is not lrelu")
        group = ek.get("mbstd_group_size", 4)
        model["mbstd_group"] = group if isinstance(group, int) and group > 0 else 4
    return Architecture(_model_config(model), res, _get(k, "img_channels", 3), _get(sk, "num_fp16_res", 0))


# StyleGAN2 (TF) builds its synthesis with G_synthesis_stylegan2, StyleGAN2-ADA (TF) with G_synthesis;
# both use the variable names tf_to_nvidia_tensors reads. D: D_stylegan2 / D_main.
_TF_SYNTHESIS = ("G_synthesis_stylegan2", "G_synthesis")
_TF_D = ("D_stylegan2", "D_main")


def architecture_from_tf(Gs: NetworkState, D: Optional[NetworkState]) -> Architecture:
    """ModelConfig, resolution and channels from StyleGAN2 (TF) static kwargs (TF defaults where absent)."""
    synth = Gs.components.get("synthesis")
    if Gs.class_name == "G_style":
        raise UnsupportedNetwork("found a StyleGAN (v1) TensorFlow network; atelier reads StyleGAN2 config-e/f networks")
    _check(
        Gs.class_name == "G_main" and synth in _TF_SYNTHESIS,
        f"found TensorFlow generator {Gs.class_name}/{synth} (StyleGAN2 configs A-D use G_synthesis_stylegan_revised); "
        f"atelier reads G_main with {' or '.join(_TF_SYNTHESIS)}",
    )
    k = Gs.kwargs
    _check(_get(k, "label_size", 0) == 0, f"found a conditional TensorFlow generator (label_size={k.get('label_size')})")
    _check(
        _get(k, "architecture", "skip") == "skip",
        f"found a generator with architecture={k.get('architecture')!r}; atelier's generator is 'skip'",
    )
    _check(float(_get(k, "fmap_decay", 1.0)) == 1.0, f"fmap_decay={k.get('fmap_decay')} is not 1.0")
    _check(list(_get(k, "resample_kernel", [1, 3, 3, 1])) == [1, 3, 3, 1], "resample_kernel is not [1, 3, 3, 1]")
    _check(_get(k, "nonlinearity", "lrelu") == "lrelu", "nonlinearity is not lrelu")
    res = _get(k, "resolution", 1024)
    _check(isinstance(res, int) and _is_pow2(res) and 8 <= res <= 1024, f"resolution {res!r} is not a power of two in 8..1024")
    w_dim = _get(k, "dlatent_size", 512)
    _check(_get(k, "mapping_fmaps", w_dim) == w_dim, f"mapping_fmaps={k.get('mapping_fmaps')} differs from dlatent_size={w_dim}")
    model = dict(
        z_dim=_get(k, "latent_size", 512),
        w_dim=w_dim,
        mapping_layers=_get(k, "mapping_layers", 8),
        mapping_lr_mul=float(_get(k, "mapping_lrmul", 0.01)),
        channel_base=2 * _get(k, "fmap_base", 16384),
        channel_max=_get(k, "fmap_max", 512),
        conv_clamp=k.get("conv_clamp"),
        mbstd_group=4,
    )
    if D is not None:
        dk = D.kwargs
        _check(D.class_name in _TF_D, f"found TensorFlow discriminator {D.class_name!r}; atelier reads {' or '.join(_TF_D)}")
        _check(_get(dk, "label_size", 0) == 0, "found a conditional TensorFlow discriminator")
        _check(_get(dk, "architecture", "resnet") == "resnet", f"found a discriminator with architecture={dk.get('architecture')!r}")
        _check(
            2 * _get(dk, "fmap_base", 16384) == model["channel_base"] and _get(dk, "fmap_max", 512) == model["channel_max"],
            "D fmap_base/fmap_max differ from G's; atelier shares one value",
        )
        _check(_get(dk, "mbstd_num_features", 1) == 1, f"D mbstd_num_features={dk.get('mbstd_num_features')}; atelier has 1")
        model["mbstd_group"] = _get(dk, "mbstd_group_size", 4)  # TF StyleGAN2's default group is 4
    return Architecture(_model_config(model), res, _get(k, "num_channels", 3), _get(k, "num_fp16_res", 0))


def _model_config(model: dict) -> ModelConfig:
    from gan.export import GeneratorLoadError, model_config_from_meta

    try:
        return model_config_from_meta(model, "pickle")
    except GeneratorLoadError as exc:
        raise UnsupportedNetwork(str(exc)) from None


# --------------------------------------------------------------------------- networks


@dataclass
class ConvertedNetworks:
    """atelier state dicts for a pickle's networks (D and G may be None) and their architecture."""

    arch: Architecture
    G_ema: dict[str, torch.Tensor]
    G: Optional[dict[str, torch.Tensor]]
    D: Optional[dict[str, torch.Tensor]]
    format: str

    def model_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.arch.model)


def convert_networks(pkl: NetworkPickle) -> ConvertedNetworks:
    """Check and convert what :func:`read_network_pickle` found; UnsupportedNetwork on anything atelier lacks."""
    if pkl.format == PT_FORMAT:
        arch = architecture_from_pytorch(pkl.G_ema, pkl.D)
        to_nv = lambda net, state: state.tensors  # noqa: E731
    elif pkl.format == TF_FORMAT:
        arch = architecture_from_tf(pkl.G_ema, pkl.D)
        to_nv = lambda net, state: tf_to_nvidia_tensors(net, state.tensors, arch.resolution)  # noqa: E731
    else:
        raise UnsupportedNetwork(f"unknown pickle format {pkl.format!r}")
    res = arch.resolution
    G_ema = _checked(Generator, "G_ema", nvidia_to_atelier_state("G", to_nv("G", pkl.G_ema), res), arch)
    G = _checked(Generator, "G", nvidia_to_atelier_state("G", to_nv("G", pkl.G), res), arch) if pkl.G else None
    D = _checked(Discriminator, "D", nvidia_to_atelier_state("D", to_nv("D", pkl.D), res), arch) if pkl.D else None
    return ConvertedNetworks(arch, G_ema, G, D, pkl.format)


def _checked(cls: type, net: str, state: dict[str, torch.Tensor], arch: Architecture) -> dict[str, torch.Tensor]:
    """Fill missing-but-optional tensors and compare names/shapes with the network atelier builds."""
    # Built on the CPU, not the meta device: the meta device's first use imports for seconds,
    # and the architecture is already range-checked (model_config_from_meta).
    expected = cls(arch.model, arch.resolution, arch.img_channels).state_dict()
    if cls is Generator:
        for name, t in expected.items():
            # A model without noise (use_noise=False) or without a tracked w_avg: the neutral values.
            if name not in state and (name.endswith("noise.strength") or name.endswith("noise.const") or name == "mapping.w_avg"):
                state[name] = torch.zeros(t.shape)
    for name, t in expected.items():
        if name not in state:
            raise UnsupportedNetwork(f"{net} lacks tensor {name!r} that atelier's network needs")
        if tuple(state[name].shape) != tuple(t.shape):
            raise UnsupportedNetwork(f"{net} tensor {name!r} has shape {list(state[name].shape)}, atelier expects {list(t.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise UnsupportedNetwork(f"{net} has tensor {extra[0]!r} that atelier's network lacks")
    return state


def load_pickle_networks(path: str | os.PathLike) -> ConvertedNetworks:
    """Read and convert an NVIDIA pickle (PickleRefused / UnsupportedNetwork, one line, on failure)."""
    pkl = read_network_pickle(path)
    try:
        return convert_networks(pkl)
    except UnsupportedNetwork as exc:  # one line, however the file spelled its names and values
        raise UnsupportedNetwork(f"{path}: {' '.join(str(exc).split())[:400]}") from None
    except (TypeError, AttributeError, KeyError, ValueError, RuntimeError) as exc:  # kwargs or tensors of odd types
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UnsupportedNetwork(f"{path}: unexpected network contents ({reason})") from None


def build_network(converted: ConvertedNetworks, which: str = "G_ema", device: str | torch.device = "cpu") -> torch.nn.Module:
    """An eval-mode atelier network (``which`` = "G_ema", "G" or "D") holding the converted weights."""
    state = getattr(converted, which)
    if state is None:
        raise UnsupportedNetwork(f"the pickle has no {which}")
    cls = Discriminator if which == "D" else Generator
    net = cls(converted.arch.model, converted.arch.resolution, converted.arch.img_channels)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
