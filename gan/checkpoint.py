"""Training checkpoints: the full state of a run, written so a kill never leaves a broken one.

Layout of ``RUN_DIR/checkpoints/<nimg>/`` (``<nimg>``: images seen, zero-padded, so the
numerically largest complete dir is the latest)::

    G.safetensors, D.safetensors, G_ema.safetensors   parameters and buffers
    optim_G.pt, optim_D.pt                            Adam state dicts (tensors and numbers only)
    training_state.pt                                 loss state (pl_mean), augmentation state,
                                                      GradScaler state (tensors and numbers only)
    rng-rank<R>.pt                                    python/numpy/torch(/CUDA) RNG of process R
    process-<R>.json                                  SHA-256 of process R's weights: all must agree
    state.json                                        format, counters, data position, model config,
                                                      resolution, the resolved training config, and
                                                      the SHA-256 of every other file (files_sha256)

Loading verifies the files against ``files_sha256`` and the loaded weights against the
digests of ``process-0.json`` (older checkpoints have only the latter), so a flipped byte is an
error, never a silently different run. Files get the permissions of the user's umask.

Every ``.pt`` file is read with ``torch.load(weights_only=True)``, so loading never runs
pickled code. A checkpoint is first written to ``checkpoints/.tmp-<nimg>/`` and renamed into
place only once ``state.json`` (written last) is there; scanners ignore anything else.

Several processes (or nodes): every process writes its own RNG and digest file into the same
temporary dir, and the main process renames it after all have written, so the run dir must
be on a filesystem that every process sees (node-local disks lose the other nodes' files; the
main process logs an error when files of some processes are missing).
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as safetensors_bytes

from atelier.common.errors import first_line
from atelier.common.hashing import file_sha256, tensors_sha256, weights_sha256
from atelier.common.safe_load import UnreadableTensorsFile, load_tensors

log = logging.getLogger(__name__)

FORMAT = "atelier-checkpoint/1"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
NETWORK_FILES = {"G": "G.safetensors", "D": "D.safetensors", "G_ema": "G_ema.safetensors"}
OPTIMIZER_FILES = {"G": "optim_G.pt", "D": "optim_D.pt"}
EXTRA_FILE = "training_state.pt"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


class CheckpointError(ValueError):
    """A path is not a usable checkpoint; the message is one line naming the problem."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files do not match the digests recorded when it was written."""


class ProcessGroup(Protocol):
    """What saving needs from the process group (gan.process_group.ProcessGroup; an accelerate.Accelerator fits)."""

    is_main_process: bool
    process_index: int
    num_processes: int

    def wait_for_everyone(self) -> None: ...


@dataclass
class Progress:
    """Counters that say where training stands; stored in state.json."""

    cur_nimg: int = 0  # real images shown to D, all processes together
    step: int = 0  # minibatches done (phase schedules use step % interval)
    data_position: int = 0  # items consumed from the minibatch stream (gan.minibatches)
    bad_steps: int = 0  # the longest current run of non-finite results among the phases (below)
    # Per phase ("G_reg", ...): how many of its consecutive runs had non-finite losses or gradients.
    # Per phase, so a lazy phase failing on every run it makes is not reset by the steps in between.
    bad_runs: dict[str, int] = field(default_factory=dict)

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000.0


@dataclass
class Snapshot:
    """Everything one checkpoint holds besides the RNG states, which each process adds itself."""

    networks: Mapping[str, torch.nn.Module]  # keys of NETWORK_FILES
    optimizers: Mapping[str, torch.optim.Optimizer]  # keys of OPTIMIZER_FILES
    progress: Progress
    extra: dict[str, Any] = field(default_factory=dict)  # loss / augment / scaler state dicts
    meta: dict[str, Any] = field(default_factory=dict)  # model, resolution, config, run ...


# --------------------------------------------------------------------------- naming and finding


def checkpoint_name(cur_nimg: int) -> str:
    return f"{cur_nimg:010d}"


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint dirs (numeric name with state.json), oldest first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    complete = [d for d in root.iterdir() if d.is_dir() and d.name.isdigit() and (d / STATE_FILE).is_file()]
    return sorted(complete, key=lambda d: int(d.name))


def latest_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run dir, or None."""
    found = list_checkpoints(Path(run_dir) / CHECKPOINTS_DIR)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike, option: str = "--resume") -> Path:
    """A checkpoint dir given itself, its state.json, or a run dir (its latest checkpoint).

    ``option`` names where the path came from in error messages.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{option} {path}: no such file or directory")
    if path.is_file() and path.name == STATE_FILE:
        path = path.parent
    if path.is_dir() and (path / STATE_FILE).is_file():
        return path
    if path.is_dir() and (path / CHECKPOINTS_DIR).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{option} {path}: run dir has no complete checkpoint under {CHECKPOINTS_DIR}/")
        return latest
    raise CheckpointError(f"{option} {path}: not a checkpoint (no {STATE_FILE}) and not a run dir (no {CHECKPOINTS_DIR}/)")


def read_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The parsed state.json of a checkpoint dir; checks the format."""
    path = Path(ckpt) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({first_line(exc)})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an atelier training checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def check_architecture(state: Mapping[str, Any], model: Mapping[str, Any], resolution: int, where: Path) -> None:
    """Refuse a checkpoint whose networks differ from the configured ones (one line, first difference)."""
    if state.get("resolution") != resolution:
        raise CheckpointError(
            f"{where}: checkpoint is for resolution {state.get('resolution')}, the config says data.resolution={resolution}"
        )
    stored = state.get("model") or {}
    for key in sorted(set(stored) | set(model)):
        if stored.get(key) != model.get(key):
            raise CheckpointError(
                f"{where}: checkpoint has a different architecture: model.{key}={stored.get(key)!r} there, {model.get(key)!r} in the config"
            )


# --------------------------------------------------------------------------- RNG state


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and plain numbers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d; not restored",
                len(state["cuda"]),
                torch.cuda.device_count(),
            )


def storage_device(device: torch.device | str) -> str:
    """The device string file loaders accept for ``device``.

    accelerate gives each process of a multi-process CPU run the device ``cpu:<rank>``, which
    neither safetensors nor ``torch.load`` understand: every CPU is plain "cpu".
    """
    device = torch.device(device)
    return "cpu" if device.type == "cpu" else str(device)


def _rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def _process_file(rank: int) -> str:
    return f"process-{rank}.json"


def process_digests(ckpt: str | os.PathLike) -> dict[int, dict[str, str]]:
    """Per-process weight digests stored in a checkpoint: {rank: {"G": sha, "D": sha, "G_ema": sha}}."""
    out = {}
    for path in sorted(Path(ckpt).glob("process-*.json")):
        record = json.loads(path.read_text())
        out[int(record["rank"])] = record["weights_sha256"]
    return out


# --------------------------------------------------------------------------- saving


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file under the user's umask and flush it to disk.

    Every checkpoint file goes through here: a full disk or a missing permission is then an
    OSError naming the file (not a serialiser's "unexpected pos"), and safetensors' own
    writer, which makes owner-only files, is not used.
    """
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _cpu_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone(): safetensors refuses tensors sharing storage, and must not hold views into live weights.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _write_payload(tmp: Path, snap: Snapshot) -> None:
    for key, module in snap.networks.items():
        write_file(tmp / NETWORK_FILES[key], safetensors_bytes(_cpu_tensors(module)))
    for key, opt in snap.optimizers.items():
        write_file(tmp / OPTIMIZER_FILES[key], _torch_bytes(opt.state_dict()))
    write_file(tmp / EXTRA_FILE, _torch_bytes(snap.extra))


def _files_sha256(ckpt: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(ckpt.iterdir()) if p.is_file() and p.name != STATE_FILE}


def _state_json(snap: Snapshot, num_processes: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        **snap.meta,
        "progress": asdict(snap.progress),
        "kimg": snap.progress.kimg,
        "step": snap.progress.step,
        "num_processes": num_processes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch_version": torch.__version__,
    }


def save_checkpoint(run_dir: str | os.PathLike, snap: Snapshot, group: ProcessGroup, keep_last: int) -> Path:
    """Write ``snap`` plus every process's RNG state to ``RUN_DIR/checkpoints/<nimg>/``.

    Collective: every process must call it. The main process writes the networks, optimisers
    and state.json; each process writes its own RNG file. ``run_dir`` must be on a filesystem
    shared by all processes. Older checkpoints beyond ``keep_last`` are removed afterwards.
    Returns the checkpoint dir.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    name = checkpoint_name(snap.progress.cur_nimg)
    tmp, final = root / f"{_TMP_PREFIX}{name}", root / name
    try:
        if group.is_main_process:
            if tmp.exists():  # left over from a run killed mid-save
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        group.wait_for_everyone()  # the main process has cleared and created tmp
        rank = group.process_index
        # A no-op on the shared filesystem the run needs; without it a process whose view of the
        # dir lags (or a node-local disk) would fail here instead of being reported below.
        tmp.mkdir(parents=True, exist_ok=True)
        write_file(tmp / _rng_file(rank), _torch_bytes(capture_rng()))
        digests = {key: weights_sha256(module) for key, module in snap.networks.items()}
        record = json.dumps({"rank": rank, "weights_sha256": digests}, sort_keys=True)
        write_file(tmp / _process_file(rank), record.encode())
        group.wait_for_everyone()  # every process has written before the main process renames tmp
        if group.is_main_process:
            _warn_if_processes_disagree(tmp, group.num_processes)
            _write_payload(tmp, snap)
            state = {**_state_json(snap, group.num_processes), "files_sha256": _files_sha256(tmp)}
            write_file(tmp / STATE_FILE, json.dumps(state, indent=2, sort_keys=True).encode())
            _move_into_place(tmp, final)
            _prune(root, keep_last, protect=final)
    except BaseException:
        # A full disk, a missing permission, a signal: leave no half-written dir behind.
        if group.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    group.wait_for_everyone()
    return final


def _warn_if_processes_disagree(tmp: Path, num_processes: int) -> None:
    digests = process_digests(tmp)
    if len(digests) != num_processes:
        log.error(
            "checkpoint %s holds the files of %d of %d processes: the run dir must be on a filesystem all processes share",
            tmp.name,
            len(digests),
            num_processes,
        )
    reference = digests.get(0)
    for rank, digest in digests.items():
        if digest != reference:
            differing = sorted(k for k in digest if digest[k] != (reference or {}).get(k))
            log.error("process %d holds different %s weights than process 0: processes went out of sync", rank, "/".join(differing))


def _move_into_place(tmp: Path, final: Path) -> None:
    if final.exists():  # same nimg saved again (e.g. a resumed run): swap, then delete the old copy
        old = final.with_name(f"{_OLD_PREFIX}{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _prune(root: Path, keep_last: int, protect: Path) -> None:
    for old in list_checkpoints(root)[:-keep_last]:
        if old != protect:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- loading


@dataclass
class Restored:
    """What :func:`load_checkpoint` read besides the module/optimiser weights it loaded in place."""

    state: dict[str, Any]
    progress: Progress
    extra: dict[str, Any]
    rng: Optional[dict[str, Any]]  # None when the checkpoint has no state for this process


def _load_pt(path: Path, device: torch.device | str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: incomplete checkpoint, {path.name} is missing")
    try:
        return load_tensors(path, map_location=storage_device(device))
    except UnreadableTensorsFile as exc:
        raise CheckpointError(str(exc)) from exc


def _intact_hint(ckpt: Path) -> str:
    """ ", the previous checkpoint ... still works: --resume ..." for an error about ``ckpt``, or ""."""
    if ckpt.parent.name != CHECKPOINTS_DIR:
        return ""
    for older in reversed(list_checkpoints(ckpt.parent)):
        if older.name.isdigit() and ckpt.name.isdigit() and int(older.name) < int(ckpt.name):
            try:
                verify_checkpoint(older)
            except CheckpointError:
                continue
            return f"; the earlier checkpoint is intact: --resume {older}"
    return ""


def _damaged(ckpt: Path, message: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(f"{message}{_intact_hint(ckpt)}")


def _recorded_weight_digests(ckpt: Path) -> dict[str, str]:
    path = ckpt / _process_file(0)
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not readable ({first_line(exc)})") from exc


def _read_weights(path: Path, expected: Optional[str]) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors on the CPU, read once and checked against the recorded digest."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: incomplete checkpoint, {path.name} is missing")
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({first_line(exc)})") from exc
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise _damaged(path.parent, f"{path}: not a readable safetensors file ({first_line(exc)})") from exc
    if expected is not None and tensors_sha256(tensors) != expected:
        raise _damaged(path.parent, f"{path}: damaged, its weights do not match the sha256 recorded in {_process_file(0)}")
    return tensors


def verify_checkpoint(ckpt: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a checkpoint against the digests recorded when it was written.

    Returns its parsed state.json; raises DamagedCheckpoint (one line naming the file) when a
    file is missing, truncated or changed. Checkpoints from before ``files_sha256`` existed
    are checked by their weights against process-0.json.
    """
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    recorded = state.get("files_sha256")
    if isinstance(recorded, dict):
        for name, digest in sorted(recorded.items()):
            path = ckpt / name
            if not path.is_file():
                raise _damaged(ckpt, f"{ckpt}: incomplete checkpoint, {name} is missing")
            if file_sha256(path) != digest:
                raise _damaged(ckpt, f"{path}: damaged, sha256 differs from the one recorded in {STATE_FILE}")
    else:
        digests = _recorded_weight_digests(ckpt)
        for key, name in NETWORK_FILES.items():
            _read_weights(ckpt / name, digests.get(key))
    return state


def choose_resume_checkpoint(path: str | os.PathLike, option: str = "--resume") -> Path:
    """The checkpoint ``--resume path`` continues from, verified.

    Given a run dir, a damaged latest checkpoint falls back to the newest intact one, with a
    warning saying so; given one checkpoint dir, a damaged one is an error (naming an intact
    earlier checkpoint when there is one).
    """
    path = Path(path)
    chosen = resolve_checkpoint(path, option)
    try:
        verify_checkpoint(chosen)
        return chosen
    except CheckpointError as exc:
        if chosen.parent.parent != path:  # an explicit checkpoint dir: the user picked this one
            raise
        damaged = exc
    for older in reversed(list_checkpoints(chosen.parent)):
        if int(older.name) >= int(chosen.name):
            continue
        try:
            verify_checkpoint(older)
        except CheckpointError:
            continue
        log.warning("the latest checkpoint %s is damaged (%s); resuming from the newest intact one, %s", chosen.name, damaged, older)
        return older
    raise CheckpointError(f"{option} {path}: no intact checkpoint ({damaged})")


def load_networks(ckpt: str | os.PathLike, networks: Mapping[str, torch.nn.Module], device: torch.device | str = "cpu") -> None:
    """Load only the weights of ``networks`` (keys of NETWORK_FILES) from a checkpoint dir, in place.

    Each file is read once, on the CPU, and checked against process-0.json's digest before the
    weights are copied into the networks (on whatever device they live).
    """
    ckpt = Path(ckpt)
    digests = _recorded_weight_digests(ckpt)
    for key, module in networks.items():
        path = ckpt / NETWORK_FILES[key]
        tensors = _read_weights(path, digests.get(key))
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit the network ({first_line(exc)})") from exc


def _with_implementation_of(opt: torch.optim.Optimizer, saved: dict) -> dict:
    """``saved`` optimiser state, set to run with ``opt``'s implementation (fused / foreach).

    How Adam runs is this run's choice (``perf.fused_adam``), not a hyperparameter to resume:
    load_state_dict would otherwise restore the checkpoint's flags. Fused Adam keeps its step
    counts on the parameters' device; the per-tensor forms read them on the host.
    """
    fused = bool(opt.defaults.get("fused"))
    for group in saved["param_groups"]:
        for flag in ("fused", "foreach"):
            if flag in opt.defaults:
                group[flag] = opt.defaults[flag]
    if not fused:
        for state in saved["state"].values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].cpu()
    return saved


def _match_parameter_layout(opt: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Saved moments keep the strides of the run that saved them; after a resume with
    ``perf.channels_last`` switched they would differ from the parameters', which fused Adam
    rejects on CUDA (and mis-indexes on CPU).
    """
    for param, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def load_checkpoint(
    ckpt: str | os.PathLike,
    networks: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    rank: int = 0,
    device: torch.device | str = "cpu",
    allow_rng_reset: bool = False,
) -> Restored:
    """Load weights and optimiser states in place; return counters, extra state and this rank's RNG.

    The RNG file of a process the checkpoint had is required (without it the resumed run cannot
    repeat the uninterrupted one) unless ``allow_rng_reset``; a process beyond the saved count
    gets ``rng=None`` and seeds itself afresh.
    """
    ckpt = Path(ckpt)
    state = verify_checkpoint(ckpt)
    rng_path = ckpt / _rng_file(rank)
    saved_processes = int(state.get("num_processes", 1))
    if not rng_path.is_file() and rank < saved_processes and not allow_rng_reset:
        raise CheckpointError(
            f"{ckpt}: incomplete checkpoint, {rng_path.name} is missing: resuming without it cannot repeat "
            "the uninterrupted run; pass --allow-rng-reset to continue with fresh random streams"
        )
    load_networks(ckpt, networks, device)
    for key, opt in optimizers.items():
        opt.load_state_dict(_with_implementation_of(opt, _load_pt(ckpt / OPTIMIZER_FILES[key], device)))
        _match_parameter_layout(opt)
    extra = _load_pt(ckpt / EXTRA_FILE, "cpu")
    rng = _load_pt(rng_path, "cpu") if rng_path.is_file() else None
    progress = Progress(**state["progress"])
    return Restored(state=state, progress=progress, extra=extra, rng=rng)
