"""One decoded copy of the dataset per machine, shared by every training process on it.

With several processes per machine (one per GPU), :meth:`ImageFolderDataset.preload` would
decode one copy per process: 8 GPUs hold 8 copies of the same pixels. Here the first
process of each machine decodes the dataset once into a file in shared memory
(``data.shm_dir``, ``/dev/shm`` by default), every process of that machine maps the file
read-only (the pages are the same physical memory for all of them and for their DataLoader
workers), and the file's name is removed as soon as all have mapped it, so the memory goes
back to the system when the last process exits, however it exits.

A file left behind by a run killed between writing and unlinking is removed by the next
run on that machine (its name carries the pid of the process that wrote it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from gan.dataset import ImageFolderDataset

log = logging.getLogger(__name__)

PREFIX = "atelier-dataset-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+\.u8(\.tmp)?$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_files(shm_dir: Path) -> None:
    """Delete cache files whose writer process is gone (a run killed before it unlinked them)."""
    for path in shm_dir.glob(f"{PREFIX}*"):
        match = _NAME.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            log.info("removed %s, left by a run that no longer exists", path)


def _fits(dataset: ImageFolderDataset, shm_dir: Path, memory_fraction: float) -> str | None:
    """None if the decoded dataset fits in memory and in ``shm_dir``; else why not."""
    need, free = dataset.decoded_bytes(), shutil.disk_usage(shm_dir).free
    if need > free:
        return f"{shm_dir} has {free / 2**30:.1f} GB free, the dataset needs {need / 2**30:.1f} GB"
    return dataset.memory_shortfall(memory_fraction)


def preload_per_machine(dataset: ImageFolderDataset, accelerator, shm_dir: str | Path, memory_fraction: float = 0.5) -> bool:
    """Give ``dataset`` one decoded copy per machine, shared by all processes; returns whether it did.

    ``accelerator`` is the run's :class:`gan.process_group.ProcessGroup` (or an Accelerator, which
    is wrapped in one): every collective goes through that interface. Every process must call it
    at the same point (it waits for all of them twice). When the dataset does not fit (memory or
    ``shm_dir``), nothing is shared and it returns False on every process of that machine, which
    then decide for themselves (e.g. ``dataset.preload()``).
    """
    from gan.process_group import ProcessGroup

    group = accelerator if isinstance(accelerator, ProcessGroup) else ProcessGroup(accelerator)
    shm_dir = Path(shm_dir)
    token = group.broadcast_object(uuid.uuid4().hex[:12])  # one name per launch
    if group.is_local_main_process and shm_dir.is_dir():
        remove_stale_files(shm_dir)
        why_not = _fits(dataset, shm_dir, memory_fraction)
        if why_not is None:
            path = shm_dir / f"{PREFIX}{os.getpid()}-{token}.u8"
            try:
                dataset.decode_to_file(path)
            except OSError as exc:  # e.g. shm filled up meanwhile: each process keeps its own copy instead
                log.warning(
                    "%s: could not write the shared decoded dataset to %s (%s); each process decodes its own", dataset.root, shm_dir, exc
                )
        else:
            log.warning("%s: not sharing the decoded dataset between processes: %s", dataset.root, why_not)
    group.wait_for_everyone()
    found = list(shm_dir.glob(f"{PREFIX}*-{token}.u8")) if shm_dir.is_dir() else []
    if found:
        dataset.map_file(found[0])
    group.wait_for_everyone()  # every process holds its mapping: the name can go
    if group.is_local_main_process:
        for path in found:
            path.unlink(missing_ok=True)
    if found:
        log.info(
            "%s: %d images decoded once for this machine's processes (%.1f GB shared)",
            dataset.root,
            len(dataset),
            dataset.decoded_bytes() / 2**30,
        )
    return bool(found)
