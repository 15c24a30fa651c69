"""A reader for NVIDIA's StyleGAN2 network pickles that never runs code from the file.

``pickle.load`` executes whatever callables a file names, and NVIDIA's own loader goes further:
each network in a StyleGAN2-ADA (PyTorch) pickle carries the Python source of its module, which
``torch_utils.persistence`` ``exec``s; a StyleGAN2 (TensorFlow) pickle does the same with its
``build_module_src``. This module reads both formats with an allow-list instead:

- a pure-Python unpickler whose ``find_class`` knows a short list of names (see
  :data:`ALLOWED`), each mapped to an inert stand-in written here: plain containers, numeric
  numpy arrays and scalars, tensors rebuilt from storages (the storages themselves are read by
  ``torch.load(weights_only=True)``), and data-only stand-ins for NVIDIA's classes;
- ``BUILD`` (``__setstate__``) is allowed only on those stand-ins and on numeric arrays;
- the embedded source is kept as a string, never compiled, imported or executed.

Anything else is refused with a one-line :class:`PickleRefused` that names the offending
global (for example ``posix.system``) and says that nothing was loaded. The structure found is
returned as :class:`NetworkPickle`: per network its class name, init kwargs and tensors under
NVIDIA's own names. :mod:`gan.nvidia.convert` turns that into atelier's networks.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

PICKLE_SUFFIXES = (".pkl", ".pickle")
_NUMERIC_KINDS = "biufc"  # numpy dtype kinds that hold numbers only (no objects, no structs)


class PickleRefused(ValueError):
    """A file is not a safely readable NVIDIA network pickle; the message is one line."""


def is_pickle_path(path: str | os.PathLike) -> bool:
    """True for a path that names a pickle by its suffix (``.pkl`` / ``.pickle``)."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


# --------------------------------------------------------------------------- stand-ins


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (no attribute access needed)."""


@dataclass
class PersistentObject:
    """Stand-in for an object of one of NVIDIA's ``@persistent_class`` classes.

    ``module_src`` is the source text the file carries; it is kept for inspection only and
    never executed. ``state`` is the object's ``__dict__`` as pickled (for a torch module:
    ``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs`` ...).
    """

    class_name: str
    module_src: str
    version: Any
    state: dict


class TFNetwork:
    """Stand-in for ``dnnlib.tflib.network.Network``: keeps the pickled state dict as data."""

    def __init__(self) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise PickleRefused(f"a TensorFlow Network's state is a {type(state).__name__}, expected a dict")
        self.state = state


class ModuleStub:
    """Stand-in for a plain ``torch.nn`` module inside a network (its state kept as data)."""

    def __init__(self, qualname: str = "torch.nn.Module") -> None:
        self.qualname = qualname
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _module_stub_class(qualname: str) -> type:
    return type("ModuleStub", (ModuleStub,), {"__init__": lambda self: ModuleStub.__init__(self, qualname)})


# --------------------------------------------------------------------------- allowed callables


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: keep, never exec."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise PickleRefused("a persistent object's metadata is not NVIDIA's {'type': 'class', ...} record")
    src, name, state = meta.get("module_src"), meta.get("class_name"), meta.get("state")
    if not isinstance(src, str) or not isinstance(name, str) or not isinstance(state, dict):
        raise PickleRefused("a persistent object lacks module_src/class_name/state of the expected types")
    return PersistentObject(class_name=name, module_src=src, version=meta.get("version"), state=dict(state))


def _load_storage(data: Any) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: torch's own tensors-only reader."""
    if not isinstance(data, (bytes, bytearray)):
        raise PickleRefused(f"a tensor storage is a {type(data).__name__}, expected bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise PickleRefused(f"an embedded tensor storage is unreadable ({_first_line(exc)})") from exc
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise PickleRefused(f"an embedded tensor storage holds a {type(storage).__name__}, expected a storage")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (and v1): a view of a loaded storage."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise PickleRefused(f"a tensor is built on a {type(storage).__name__}, expected a storage")
    ints = [offset, *_as_ints(size), *_as_ints(stride)]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise PickleRefused("a tensor has a non-integer or negative offset, size or stride")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride):
        raise PickleRefused("a tensor's size and stride differ in length")
    with warnings.catch_warnings():  # TypedStorage is deprecated but is what the pickles hold
        warnings.simplefilter("ignore")
        numel = storage.size() if isinstance(storage, torch.TypedStorage) else storage.nbytes()
    if numel is not None and math.prod(size) > 0:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= numel:
            raise PickleRefused(f"a tensor of size {list(size)} reaches past its storage of {numel} elements")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dtype = storage.dtype if isinstance(storage, torch.TypedStorage) else torch.uint8  # untyped: bytes
        untyped = storage.untyped() if isinstance(storage, torch.TypedStorage) else storage
        t = torch.empty(0, dtype=dtype)
        t.set_(untyped, offset, size, stride)
    return t


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, *rest: Any) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``: the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise PickleRefused(f"a parameter wraps a {type(data).__name__}, expected a tensor")
    return data


def _as_ints(value: Any) -> list:
    if not isinstance(value, (tuple, list, torch.Size)):
        raise PickleRefused("a tensor's size/stride is not a tuple")
    return list(value)


def _numeric_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise PickleRefused(f"numpy dtype {dtype.str!r} is not numeric")
    return dtype


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """Stand-in for ``numpy.dtype``: numeric dtypes only."""
    if not isinstance(spec, str):
        raise PickleRefused(f"numpy dtype from a {type(spec).__name__}, expected a type code")
    try:
        dtype = np.dtype(spec)
    except TypeError as exc:
        raise PickleRefused(f"unknown numpy dtype {spec!r}") from exc
    return _numeric_dtype(dtype)


class _NDArrayToken:
    """What ``numpy.ndarray`` resolves to: only :func:`_np_reconstruct` accepts it (so a file
    cannot call the array constructor with a huge shape)."""


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """Stand-in for ``numpy.core.multiarray._reconstruct``: an empty array that BUILD fills."""
    if cls is not _NDArrayToken:
        raise PickleRefused("numpy _reconstruct is asked for something other than an ndarray")
    return np.ndarray((0,), dtype=np.uint8)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar``: a numeric numpy scalar from its bytes."""
    if not isinstance(dtype, np.dtype) or not isinstance(data, (bytes, bytearray)):
        raise PickleRefused("a numpy scalar without a numeric dtype and bytes")
    _numeric_dtype(dtype)
    if len(data) != dtype.itemsize:
        raise PickleRefused("a numpy scalar's bytes do not match its dtype")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: how protocol-2 pickles spell bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PickleRefused("_codecs.encode used for something other than latin-1 bytes")
    return codecs.encode(text, "latin1")


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """Stand-in for ``copyreg._reconstructor``: only builds this module's stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, (ModuleStub, TFNetwork)) and base is object):
        raise PickleRefused("copyreg._reconstructor asked to build something other than a network stand-in")
    return cls()


ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): _NDArrayToken,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}
# Plain torch.nn modules (not NVIDIA's persistent classes) become data-only stand-ins.
_MODULE_PREFIXES = ("torch.nn.modules.",)
_BUILDABLE = (TFNetwork, ModuleStub, np.ndarray, np.dtype)


class _SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so BUILD can be checked too
    """``find_class`` from :data:`ALLOWED` only; BUILD only on stand-ins and numeric arrays."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # Python 2 spellings (__builtin__, copy_reg ...), as pickle itself maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = ALLOWED.get((module, name))
        if found is not None:
            return found
        if module.startswith(_MODULE_PREFIXES) and name.isidentifier():
            return _module_stub_class(f"{module}.{name}")
        raise PickleRefused(f"the pickle calls {module}.{name}, which is not on the allow-list of network pickles")

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("the pickle refers to external persistent objects (a torch.save file?), which are not read")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _BUILDABLE) or isinstance(inst, type):
            raise PickleRefused(f"the pickle sets the state of a {type(inst).__name__}, which is not allowed")
        if isinstance(inst, np.dtype):
            inst.__setstate__(state)
            _numeric_dtype(inst)
        elif isinstance(inst, np.ndarray):
            if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)):
                raise PickleRefused("a numpy array with an unexpected state")
            _numeric_dtype(state[2])
            inst.__setstate__(state)
        else:
            inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build


class _BoundedReader:
    """A file reader that never asks for more than the file has left (a hostile length field in
    the pickle must not make Python allocate gigabytes)."""

    def __init__(self, f: io.BufferedReader, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self.f.readline(self.left)
        self.left -= len(line)
        return line

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with the allow-list; :class:`PickleRefused` (one line) otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if size == 0:
                raise PickleRefused(f"{path}: empty file; nothing was loaded")
            if head.startswith(b"PK\x03\x04"):
                raise PickleRefused(f"{path}: a zip archive (torch.save's format), not a network pickle; nothing was loaded")
            if not (head[:1] == b"\x80" and 2 <= head[1:2][0] <= 5 if len(head) >= 2 else False):
                raise PickleRefused(
                    f"{path}: not a network pickle (starts with bytes {head.hex(' ')}, expected a protocol 2-5 "
                    "pickle header 80 0x); nothing was loaded"
                )
            f.seek(0)
            try:
                return _SafeUnpickler(_BoundedReader(f, size)).load()
            except PickleRefused as exc:
                raise PickleRefused(f"{path}: refused: {' '.join(str(exc).split())[:400]}; nothing was loaded") from None
            except EOFError:
                raise PickleRefused(f"{path}: truncated pickle (ends before its STOP opcode); nothing was loaded") from None
            except KeyError as exc:  # the pure-Python unpickler's answer to an unknown opcode
                what = f"unknown opcode 0x{exc.args[0]:02x}" if exc.args and isinstance(exc.args[0], int) else _first_line(exc)
                raise PickleRefused(f"{path}: not a readable pickle ({what}); nothing was loaded") from None
            except (
                pickle.UnpicklingError,
                ValueError,
                IndexError,
                TypeError,
                AttributeError,
                OverflowError,
                MemoryError,
                RuntimeError,
                UnicodeDecodeError,
            ) as exc:
                if "exhausted" in str(exc) or "truncated" in str(exc):
                    raise PickleRefused(f"{path}: truncated pickle ({_first_line(exc)}); nothing was loaded") from None
                raise PickleRefused(f"{path}: not a readable pickle ({_first_line(exc)}); nothing was loaded") from None
    except OSError as exc:
        raise PickleRefused(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from exc


# --------------------------------------------------------------------------- structure


@dataclass
class NetworkState:
    """One network as found in a pickle: NVIDIA's class name, its init kwargs (PyTorch) or
    static kwargs (TensorFlow), and its tensors under NVIDIA's own names."""

    class_name: str
    kwargs: dict
    tensors: dict[str, torch.Tensor]
    children: dict[str, list[str]] = field(default_factory=dict)  # module path -> child names (PyTorch)
    components: dict[str, str] = field(default_factory=dict)  # component -> build func (TensorFlow)


@dataclass
class NetworkPickle:
    """The networks of one NVIDIA pickle. ``format`` is "stylegan2-ada-pytorch" or "stylegan2-tf"."""

    format: str
    G: Optional[NetworkState]
    D: Optional[NetworkState]
    G_ema: NetworkState
    extras: dict = field(default_factory=dict)  # e.g. training_set_kwargs (plain data)


PT_FORMAT, TF_FORMAT = "stylegan2-ada-pytorch", "stylegan2-tf"


def read_network_pickle(path: str | os.PathLike) -> NetworkPickle:
    """Read an NVIDIA StyleGAN2-ADA (PyTorch) or StyleGAN2 (TensorFlow) pickle without running it."""
    data = safe_load_pickle(path)
    try:
        if isinstance(data, dict) and "G_ema" in data:
            return _pytorch_networks(data)
        if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data):
            return _tf_networks(data)
    except PickleRefused as exc:  # one line, however the file spelled its names
        raise PickleRefused(f"{path}: {' '.join(str(exc).split())[:400]}") from None
    except (TypeError, AttributeError, KeyError, ValueError, RecursionError) as exc:  # a structure not NVIDIA's
        raise PickleRefused(f"{path}: unexpected network structure ({_first_line(exc)})") from None
    raise PickleRefused(
        f"{path}: not an NVIDIA network pickle (it holds {_describe(data)}, expected a snapshot "
        "dict with G_ema or a TensorFlow (G, D, Gs) tuple)"
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:6]}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def _pytorch_networks(data: dict) -> NetworkPickle:
    nets = {}
    for key in ("G", "D", "G_ema"):
        obj = data.get(key)
        if obj is None and key != "G_ema":
            nets[key] = None
            continue
        if not isinstance(obj, PersistentObject):
            raise PickleRefused(f"snapshot entry {key!r} is a {type(obj).__name__}, expected one of NVIDIA's networks")
        nets[key] = _pytorch_network(obj)
    extras = {k: v for k, v in data.items() if k == "training_set_kwargs" and isinstance(v, dict)}
    return NetworkPickle(PT_FORMAT, nets["G"], nets["D"], nets["G_ema"], extras)


def _pytorch_network(root: PersistentObject) -> NetworkState:
    kwargs = root.state.get("_init_kwargs")
    if not isinstance(kwargs, dict):
        raise PickleRefused(f"network {root.class_name!r} carries no init kwargs")
    tensors: dict[str, torch.Tensor] = {}
    children: dict[str, list[str]] = {}

    def walk(obj: Any, prefix: str, depth: int) -> None:
        if depth > 32:
            raise PickleRefused("modules nested more than 32 deep")
        state = obj.state if isinstance(obj, (PersistentObject, ModuleStub)) else None
        if not isinstance(state, dict):
            raise PickleRefused(f"module {prefix.rstrip('.') or '<root>'} is a {type(obj).__name__}, expected a module")
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, t in (state.get(group) or {}).items():
                if t is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise PickleRefused(f"{prefix}{name} is a {type(t).__name__}, expected a tensor")
                tensors[f"{prefix}{name}"] = t
        mods = state.get("_modules") or {}
        children[prefix.rstrip(".")] = [str(n) for n in mods]
        for name, child in mods.items():
            if child is not None:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return NetworkState(root.class_name, _plain(kwargs), tensors, children)


def _tf_networks(nets: tuple) -> NetworkPickle:
    G, D, Gs = (_tf_network(n) for n in nets)
    return NetworkPickle(TF_FORMAT, G, D, Gs)


def _tf_network(net: TFNetwork) -> NetworkState:
    state = net.state
    version = state.get("version")
    if not isinstance(version, int) or version < 4:
        raise PickleRefused(f"TensorFlow network pickle version {version!r} is too old (StyleGAN1?); need 4 or later")
    tensors: dict[str, torch.Tensor] = {}
    components: dict[str, str] = {}

    def walk(n: TFNetwork, prefix: str, depth: int) -> None:
        if depth > 8:
            raise PickleRefused("TensorFlow components nested more than 8 deep")
        for item in n.state.get("variables") or []:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise PickleRefused("a TensorFlow variable entry is not a (name, array) pair")
            name, value = item
            if isinstance(value, (np.generic, float, int)):
                value = np.asarray(value)
            if not isinstance(value, np.ndarray):
                raise PickleRefused(f"TensorFlow variable {prefix}{name} is a {type(value).__name__}, expected an array")
            tensors[prefix + name] = torch.from_numpy(np.array(value, copy=True))
        for cname, comp in (n.state.get("components") or {}).items():
            if not isinstance(comp, TFNetwork):
                raise PickleRefused(f"TensorFlow component {cname!r} is a {type(comp).__name__}, expected a Network")
            components[prefix + str(cname)] = str(comp.state.get("build_func_name"))
            walk(comp, f"{prefix}{cname}/", depth + 1)

    walk(net, "", 0)
    kwargs = state.get("static_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise PickleRefused("a TensorFlow network's static_kwargs is not a dict")
    return NetworkState(str(state.get("build_func_name")), _plain(kwargs), tensors, components=components)


def _plain(obj: Any, depth: int = 0) -> Any:
    """Init kwargs as plain JSON-like data (EasyDicts to dicts, numpy scalars to Python numbers)."""
    if depth > 16:  # NVIDIA's kwargs nest two levels; a deeper (or cyclic) structure is not one of theirs
        raise PickleRefused("init kwargs nested more than 16 deep")
    if isinstance(obj, dict):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 64:
        return obj.tolist()
    return obj
