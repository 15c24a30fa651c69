"""The StyleGAN2-ADA training loop on Hugging Face accelerate.

One training step shows ``train.batch`` real images to D and runs up to four phases, each
with its own backward pass and optimiser step (Karras et al. 2020, "Analyzing and
Improving the Image Quality of StyleGAN", appendix B; StyleGAN2-ADA's training loop):

    G main   non-saturating loss through D                          every step
    G reg    path-length regularisation, weight x pl_interval       every pl_interval steps
    D main   logistic loss on reals and fakes (one D forward)        every step
    D reg    R1 penalty on reals, weight x r1_interval              every r1_interval steps

Regularising lazily every N steps needs the main optimiser's lr and Adam betas corrected
by ``mb_ratio = N / (N + 1)`` so that the combination behaves like regularising every step.

Distributed training: accelerate starts the process group (NCCL on GPUs, gloo on CPUs),
picks the device, provides autocast and the fp16 GradScaler, and launches 1..N processes
on one or many nodes. By design G and D are not wrapped in DistributedDataParallel
(StyleGAN2-ADA does wrap them and makes it work; here it would buy nothing): after each
phase's backward, the gradients of the module being trained are flattened and averaged
over processes in one all-reduce, and every process then takes the same optimiser step.
Every collective (gradients, w_avg, pl_mean, ADA's statistics, tick stats, checkpoints, the
stop signal) goes through one gan.process_group.ProcessGroup. Each Phase carries its loss;
what a run reports and when (gan.reporting) stays out of the step code.
One explicit collective per phase avoids DDP's reducer bookkeeping with four phases that
train different parameter sets at different (lazy) intervals, with the other network
frozen and R1/path length differentiating twice, and needs no find_unused_parameters or
no_sync. Weights stay identical across processes because they start identical (same seed,
same init) and receive identical updates.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic  # checkpoint durations: apart from the tick clock (time.time), which tests fake
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from gan import checkpoint as ckpt_io
from gan.config import ConfigError, TrainingConfig, to_dict
from gan.ema import ema_beta, update_ema
from gan.minibatches import EpochItems, MinibatchOrder
from gan.perf import apply_perf, set_eager
from gan.process_group import ProcessGroup
from gan.reporting import Reporter, Schedule
from gan.shared_cache import preload_per_machine
from gan.signals import StopRequested, StopSignals

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """One phase's losses or gradients were non-finite on ``train.max_bad_steps`` consecutive runs."""


@dataclass
class RunOptions:
    """How train.py wants this run driven (everything not in the training config)."""

    run_dir: Path
    stop_kimg: Optional[float] = None  # --max-kimg: stop earlier than train.total_kimg
    resume: Optional[Path] = None  # a resolved checkpoint dir
    tracker: Optional[str] = None  # "wandb" | "tensorboard" | None
    allow_rng_reset: bool = False  # --allow-rng-reset: resume even without this process's RNG state
    signals: Optional[StopSignals] = None  # SIGTERM/SIGINT received while training (gan.signals)


PhaseLoss = Callable[[torch.Tensor], tuple[torch.Tensor, dict]]  # one round's reals -> (loss, stats)


@dataclass
class Phase:
    """One of the step's optimisation phases, carrying the loss it minimises."""

    name: str  # "G_main" | "G_reg" | "D_main" | "D_reg": for logs and counters only
    params: list[torch.nn.Parameter]  # what this phase trains (FreezeD-frozen D blocks excluded)
    opt: torch.optim.Optimizer
    interval: int  # runs when step % interval == 0
    gain: float  # loss multiplier (reg interval for lazy regularisation)
    loss: PhaseLoss
    # A regulariser differentiates twice: it runs eagerly (compiled graphs have no double backward)
    # and in fp32 (its small second-order terms underflow in half precision).
    regulariser: bool = False
    measures_reals: bool = False  # its stats carry ADA's overfitting signal sign(D(real))

    @property
    def mixed_precision(self) -> bool:
        return not self.regulariser


@dataclass
class RunResult:
    progress: ckpt_io.Progress
    last_checkpoint: Optional[Path]
    ticks: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- set-up helpers


def batch_split(batch: int, batch_per_gpu: Optional[int], num_processes: int) -> tuple[int, int]:
    """Per-process minibatch and gradient-accumulation rounds for a global ``batch``."""
    if batch % num_processes:
        raise ConfigError(f"train.batch={batch} is not divisible by the {num_processes} processes")
    per_process = batch // num_processes
    per_round = batch_per_gpu or per_process
    if per_round > per_process or per_process % per_round:
        raise ConfigError(
            f"train.batch_per_gpu={batch_per_gpu} must divide the per-process batch "
            f"{per_process} (= train.batch {batch} / {num_processes} processes)"
        )
    return per_round, per_process // per_round


def lazy_adam(params, lr: float, betas: list[float], eps: float, reg_interval: Optional[int], fused: bool = False) -> torch.optim.Adam:
    """Adam whose lr and betas are corrected for regularisation every ``reg_interval`` steps.

    ``fused``: PyTorch's single-kernel Adam (CPU and CUDA), which updates every parameter
    in one pass instead of a chain of per-tensor ops.
    """
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=eps, fused=fused or None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels for bit-exact resume; otherwise let cuDNN pick the fastest."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        # warn_only: a few CUDA backward kernels (e.g. grid_sample in ADA) have no deterministic
        # version; on CPU every op used here is deterministic, which is what the resume test checks.
        torch.use_deterministic_algorithms(True, warn_only=True)


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except ImportError:  # Windows
        return float("nan")


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Holds the networks, optimisers, data stream and counters of one run."""

    def __init__(self, cfg: TrainingConfig, accelerator: Any, options: RunOptions) -> None:
        from gan.dataset import ImageFolderDataset  # imported here so train.py --help stays fast
        from gan.loss import StyleGAN2Loss
        from gan.networks import Discriminator, Generator

        self.cfg, self.acc, self.opts = cfg, accelerator, options
        self.group = ProcessGroup(accelerator)  # every collective below goes through it
        self.device = accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.run_dir = Path(options.run_dir)
        self.batch_per_gpu, self.accum = batch_split(cfg.train.batch, cfg.train.batch_per_gpu, self.world)
        self.dataset = ImageFolderDataset(
            cfg.data.path, resolution=cfg.data.resolution, xflip=cfg.data.xflip, seed=cfg.train.seed, cache=cfg.data.cache
        )
        configure_determinism(cfg.train.deterministic)

        # Same seed on every process => identical initial weights; training noise then differs per process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            self.G = Generator(cfg.model, cfg.data.resolution).to(self.device)
            self.D = Discriminator(cfg.model, cfg.data.resolution).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G.requires_grad_(False)
        self.D.requires_grad_(False)
        seed_everything(cfg.train.seed * self.world + self.rank)
        if cfg.transfer.init_from and options.resume is None:
            self._init_from(Path(cfg.transfer.init_from))

        self.augment_pipe, self.ada = self._build_augment()
        # perf.*: speed-only settings; the loss calls G_run/D_run (maybe compiled), checkpoints use G/D.
        self.G_run, self.D_run, self.perf = apply_perf(cfg.perf, self.G, self.D, self.device)
        if self.perf.channels_last:  # same strides as G, or the EMA's foreach lerp falls back to one op per tensor
            self.G_ema.to(memory_format=torch.channels_last)
        self.loss = StyleGAN2Loss(
            self.G_run,
            self.D_run,
            cfg.loss,
            augment_pipe=self.augment_pipe,
            process_mean=self.group.mean if self.group.distributed else None,
        )
        self.phases = self._build_phases()
        # Skip non-finite updates on the device (fused Adam's found_inf) instead of deciding on the
        # host; then the host reads each step's flags `check_lag` steps later, when a GPU has long
        # finished computing them, so the loop never blocks on one (on CPU there is nothing to wait for).
        self.device_side_skip = cfg.perf.device_side_skip and bool(self.opt_G.defaults.get("fused"))
        self.check_lag = 1 if self.device_side_skip and self.device.type == "cuda" else 0
        self._unchecked: list[dict[str, torch.Tensor]] = []
        self.progress = ckpt_io.Progress()
        self.last_checkpoint: Optional[Path] = None
        self.last_save_sec: Optional[float] = None  # how long the latest checkpoint took to write
        self._pending_stop: Optional[torch.Tensor] = None
        if options.resume is not None:
            self._restore(options.resume)
        self.data = self._data_iterator(self.progress.data_position)
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.stop_nimg = round(min(cfg.train.total_kimg, options.stop_kimg or float("inf")) * 1000)

    # ----------------------------------------------------------------- building

    def _build_augment(self) -> tuple[Optional[torch.nn.Module], Any]:
        """The augmentation the loss applies to every image D sees (ADA / fixed / DiffAugment), and
        the ADA controller that measures E[sign(D(real))] and steers the pipeline's p."""
        from gan.ada import from_config

        reduce_fn = self.group.sum if self.group.distributed else None
        return from_config(self.cfg.augment, batch_size=self.cfg.train.batch, reduce_fn=reduce_fn, device=self.device)

    def _init_from(self, source: Path) -> None:
        """Transfer learning (gan.transfer): G, D, G_ema (with w_avg) from a checkpoint/run dir, or G from an export."""
        from gan.transfer import init_networks

        kind = init_networks(source, self.G, self.D, self.G_ema, to_dict(self.cfg)["model"], self.cfg.data.resolution, self.device)
        log.info("initialised from %s (%s)", source, kind)

    def _trainable_D(self) -> list[torch.nn.Parameter]:
        """D's parameters minus the first ``transfer.freeze_d`` blocks (FreezeD, Mo et al. 2020;
        train.py checks the range before anything is built)."""
        frozen = {id(p) for block in self.D.blocks[: self.cfg.transfer.freeze_d] for p in block.parameters()}
        return [p for p in self.D.parameters() if id(p) not in frozen]

    def _build_phases(self) -> list[Phase]:
        t, lc = self.cfg.train, self.cfg.loss
        g_reg = lc.pl_interval if lc.pl_weight > 0 else None
        d_reg = lc.r1_interval if lc.r1_gamma > 0 else None
        g_params, d_params = list(self.G.parameters()), self._trainable_D()
        fused = self.cfg.perf.fused_adam and self.device.type in ("cpu", "cuda")
        opt_G = lazy_adam(g_params, t.g_lr, t.betas, t.eps, g_reg, fused)
        opt_D = lazy_adam(d_params, t.d_lr, t.betas, t.eps, d_reg, fused)
        # Latents are drawn inside each loss call (self._latents looked up then), in phase order.
        phases = [Phase("G_main", g_params, opt_G, 1, 1.0, lambda reals: self.loss.g_main(self._latents()))]
        if g_reg:
            phases.append(
                Phase("G_reg", g_params, opt_G, g_reg, float(g_reg), lambda reals: self.loss.g_pathlen(self._latents()), regulariser=True)
            )
        phases.append(Phase("D_main", d_params, opt_D, 1, 1.0, lambda reals: self.loss.d_main(reals, self._latents()), measures_reals=True))
        if d_reg:
            phases.append(Phase("D_reg", d_params, opt_D, d_reg, float(d_reg), self.loss.d_r1, regulariser=True))
        self.opt_G, self.opt_D = opt_G, opt_D
        return phases

    def _data_iterator(self, position: int):
        data = self.cfg.data
        if data.cache and self.world > 1 and data.shm_dir and not self.dataset.preloaded:
            # One decoded copy per machine for all its processes (and their workers), not one each.
            preload_per_machine(self.dataset, self.group, data.shm_dir)
        if data.cache and data.workers > 0 and not self.dataset.preloaded:
            # One decoded copy that the workers share, instead of one lazy cache per worker.
            self.dataset.preload()
        order = MinibatchOrder(len(self.dataset), self.batch_per_gpu, self.rank, self.world, self.cfg.train.seed, start=position)
        loader = torch.utils.data.DataLoader(
            EpochItems(self.dataset),
            batch_sampler=order,
            num_workers=self.cfg.data.workers,
            pin_memory=self.device.type == "cuda",
            # Own generator: creating the iterator must not draw from the global RNG (resume exactness).
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
            persistent_workers=self.cfg.data.workers > 0,
        )
        return iter(loader)

    # ----------------------------------------------------------------- checkpoints

    def _snapshot(self) -> ckpt_io.Snapshot:
        extra: dict[str, Any] = {"loss": self.loss.state_dict(), "augment": self.ada.state_dict()}
        if self.acc.scaler is not None:
            extra["scaler"] = self.acc.scaler.state_dict()
        meta = {
            "model": to_dict(self.cfg)["model"],
            "resolution": self.cfg.data.resolution,
            "img_channels": self.G.img_channels,
            "config": to_dict(self.cfg),
            "run": str(self.run_dir),
        }
        return ckpt_io.Snapshot(
            networks={"G": self.G, "D": self.D, "G_ema": self.G_ema},
            optimizers={"G": self.opt_G, "D": self.opt_D},
            progress=copy.copy(self.progress),
            extra=extra,
            meta=meta,
        )

    def save_checkpoint(self) -> Path:
        self.check_finite()  # the saved counters include every step taken so far
        started = monotonic()
        path = ckpt_io.save_checkpoint(self.run_dir, self._snapshot(), self.group, self.cfg.checkpoint.keep_last)
        if self.acc.is_main_process:
            from gan.export import EXPORT_NAME, save_generator

            save_generator(
                self.G_ema,
                self.cfg.data.resolution,
                self.cfg.model,
                self.run_dir / EXPORT_NAME,
                extra_meta={"kimg": self.progress.kimg, "run": str(self.run_dir)},
            )
            log.info("checkpoint %s", path)
        self.last_checkpoint = path
        self.last_save_sec = monotonic() - started
        return path

    # ----------------------------------------------------------------- stopping for a signal

    def stop_signal(self, signals: Optional[StopSignals]) -> Optional[int]:
        """The signal every process agrees to stop for, or None.

        One process alone cannot stop: the final checkpoint is collective. With several processes
        the flags are summed each step; on a GPU the sum is read one step later, so the loop never
        waits for it (all processes still read the same step's sum).
        """
        import signal as sig

        local = signals.signum if signals is not None else None
        if self.world == 1:
            return local
        flags = torch.tensor([float(local == sig.SIGTERM), float(local == sig.SIGINT)], device=self.device)
        reduced = self.group.sum(flags)
        if self.check_lag:
            reduced, self._pending_stop = self._pending_stop, reduced
            if reduced is None:
                return None
        term, interrupt = reduced.tolist()
        return int(sig.SIGTERM) if term > 0 else int(sig.SIGINT) if interrupt > 0 else None

    def stop(self, signum: int, signals: Optional[StopSignals], saved_at: int) -> None:
        """Write a final checkpoint if it fits in the grace period, then raise StopRequested."""
        self.check_finite()
        if saved_at == self.progress.cur_nimg and self.last_checkpoint is not None:
            raise StopRequested(signum, self.last_checkpoint)
        grace = self.cfg.checkpoint.stop_grace_sec
        elapsed = signals.seconds_since() if signals is not None else 0.0
        needed = self.last_save_sec or 0.0  # unknown before the first save: try
        fits = self.group.from_main(float(elapsed + needed <= grace), self.device) > 0
        if not fits:
            raise StopRequested(
                signum, None, f"a checkpoint takes about {needed:.0f} s, more than the {grace:g} s left of checkpoint.stop_grace_sec"
            )
        raise StopRequested(signum, self.save_checkpoint())

    def _restore(self, path: Path) -> None:
        restored = ckpt_io.load_checkpoint(
            path,
            {"G": self.G, "D": self.D, "G_ema": self.G_ema},
            {"G": self.opt_G, "D": self.opt_D},
            rank=self.rank,
            device=self.device,
            allow_rng_reset=self.opts.allow_rng_reset,
        )
        self.loss.load_state_dict(restored.extra["loss"])
        # p, and the pending sign statistics (saved summed over processes: one process takes them back)
        self.ada.load_state_dict(restored.extra["augment"], keep_pending=self.rank == 0)
        if self.acc.scaler is not None and "scaler" in restored.extra:
            self.acc.scaler.load_state_dict(restored.extra["scaler"])
        self.progress = restored.progress
        self.last_checkpoint = Path(path)
        if restored.rng is not None:
            ckpt_io.restore_rng(restored.rng)
        else:  # resumed on more processes than saved, or --allow-rng-reset: fresh, distinct streams
            log.warning("checkpoint has no RNG state for process %d; seeding it afresh", self.rank)
            seed_everything((self.cfg.train.seed * self.world + self.rank) * 1_000_003 + self.progress.step)
        log.info("resumed from %s at kimg %.3f (step %d)", path, self.progress.kimg, self.progress.step)

    # ----------------------------------------------------------------- one step

    def _latents(self) -> torch.Tensor:
        return torch.randn([self.batch_per_gpu, self.G.z_dim], device=self.device)

    def _run_phase(self, phase: Phase, reals: list[torch.Tensor]) -> torch.Tensor:
        """Forward/backward over the accumulation rounds, average gradients, step unless non-finite.

        Returns whether the update was taken, as a 0-dim bool tensor on the device.
        """
        for p in phase.params:  # the other network stays frozen: it gets no gradients to reduce
            p.requires_grad_(True)
        phase.opt.zero_grad(set_to_none=True)
        # Compiled graphs have no double backward: the regularisers (R1, path length) run eagerly.
        set_eager((self.G_run, self.D_run), phase.regulariser)
        loss_sum = torch.zeros([], device=self.device)
        signs = []  # ADA's r_t statistics, counted only if the step is taken
        for round_reals in reals:
            autocast = self.acc.autocast() if phase.mixed_precision else contextlib.nullcontext()
            with autocast:
                loss, stats = phase.loss(round_reals)
            # Divide by the rounds so accumulated gradients equal those of one big minibatch.
            self.acc.backward(loss * (phase.gain / self.accum))
            loss_sum += loss.detach().float() / self.accum
            self._record(stats)
            if phase.measures_reals:  # ADA's overfitting signal r_t = E[sign(D(real))]
                signs.append((stats["scores/real_sign"].double() * round_reals.shape[0], round_reals.shape[0]))
        self._record({f"Loss/{phase.name}": loss_sum})
        finite = self._average_gradients(phase.params, loss_sum)
        if self.acc.scaler is None and self.device_side_skip:
            for sign_sum, count in signs:  # a skipped (non-finite) round must not move p
                self.ada.add_stats(sign_sum * finite, finite.double() * count)
            phase.opt.found_inf = (~finite).float()  # fused Adam leaves params and moments alone when 1
            phase.opt.step()
        elif bool(finite):  # host decides: one GPU->CPU sync
            for sign_sum, count in signs:
                self.ada.add_stats(sign_sum, count)
            if self.acc.scaler is not None:
                scale = self.acc.scaler.get_scale()
                self.acc.scaler.step(phase.opt)  # skips the step itself when fp16 gradients overflowed
                self.acc.scaler.update()
                if self.acc.scaler.get_scale() < scale <= 1.0:
                    # Overflow is the scaler's business while it has scale to give up; at a scale of
                    # 1 or less the gradients themselves are non-finite: count it as a bad run, or a
                    # diverged fp16 run would halve its scale forever without ever stopping.
                    finite = torch.zeros_like(finite)
            else:
                phase.opt.step()
        for p in phase.params:
            p.requires_grad_(False)
        return finite

    def _average_gradients(self, trained: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """All-reduce (mean) the phase's gradients and the loss in one call; whether all are finite (0-dim bool)."""
        params = [p for p in trained if p.grad is not None]
        if self.group.distributed:
            flat = torch.cat([p.grad.flatten() for p in params] + [loss.reshape(1)])
            flat = self.group.mean(flat)
            for p, g in zip(params, flat[:-1].split([p.numel() for p in params])):
                p.grad.copy_(g.view_as(p))
            loss = flat[-1]
        if self.acc.scaler is not None:  # fp16: overflowing gradients are the scaler's business
            return torch.isfinite(loss)
        # One reduction per tensor instead of an elementwise isfinite pass: a NaN/Inf makes its norm non-finite.
        norms = torch._foreach_norm([p.grad for p in params])
        return torch.isfinite(torch.stack(norms).sum() + loss)

    def _record(self, stats: dict) -> None:
        for key, value in stats.items():
            self.stats.setdefault(key, []).append(torch.as_tensor(value, dtype=torch.float32).detach().flatten().mean())

    def train_step(self) -> None:
        """One minibatch: every due phase, the EMA update, the ADA adjustment, the counters."""
        reals = [next(self.data).to(self.device, non_blocking=True) for _ in range(self.accum)]
        finite = {}  # phase name -> whether its update was taken, for the phases due this step
        for phase in self.phases:
            if self.progress.step % phase.interval == 0:
                finite[phase.name] = self._run_phase(phase, reals)
        beta = ema_beta(self.cfg.train.batch, self.progress.cur_nimg, self.cfg.train.ema_kimg, self.cfg.train.ema_rampup)
        self._sync_buffers()
        update_ema(self.G_ema, self.G, beta)
        self.ada.step()  # collective every augment.interval steps: sums the sign statistics over processes
        self.progress.cur_nimg += self.cfg.train.batch
        self.progress.step += 1
        self.progress.data_position += self.batch_per_gpu * self.world * self.accum
        self._unchecked.append(finite)
        self.check_finite(lag=self.check_lag)

    def check_finite(self, lag: int = 0) -> None:
        """Count the skip flags of every step but the last ``lag`` ones (host sync; see ``check_lag``)."""
        while len(self._unchecked) > lag:
            flags = self._unchecked.pop(0)
            values = torch.stack(list(flags.values())).tolist() if flags else []
            self._count_bad(dict(zip(flags, values)))

    def _sync_buffers(self) -> None:
        """Average G's running mean w (``mapping.w_avg``), which each process moves with its own latents.

        It is the only G buffer training changes (FIR filters and constant noise maps are fixed),
        so one small all-reduce per step suffices; the loss averages pl_mean over processes itself.
        """
        if not self.group.distributed:
            return
        w_avg = self.G.mapping.w_avg
        w_avg.copy_(self.group.mean(w_avg))

    def _count_bad(self, finite: dict[str, bool]) -> None:
        """Count consecutive non-finite runs per phase; stop once one phase reaches train.max_bad_steps.

        Per phase, not per step: a lazy phase (G_reg every pl_interval steps) failing every time
        it runs must stop the run although the steps in between succeed.
        """
        bad = self.progress.bad_runs
        for name, ok in finite.items():
            bad[name] = 0 if ok else bad.get(name, 0) + 1
        self.progress.bad_steps = max(bad.values(), default=0)
        failed = [name for name, ok in finite.items() if not ok]
        if not failed:
            return
        log.warning(
            "non-finite loss/gradient at kimg %.3f, update skipped: %s",
            self.progress.kimg,
            ", ".join(f"{name} ({bad[name]} run(s) in a row)" for name in failed),
        )
        worst = max(failed, key=lambda name: bad[name])
        if bad[worst] >= self.cfg.train.max_bad_steps:
            last = self.last_checkpoint or "none (no checkpoint was written yet)"
            raise TrainingDiverged(
                f"training diverged: {bad[worst]} consecutive {worst} runs with non-finite losses or gradients "
                f"at kimg {self.progress.kimg:.3f}; last good checkpoint: {last}. "
                "Try a lower learning rate, a larger loss.r1_gamma or train.mixed_precision=no"
            )

    # ----------------------------------------------------------------- statistics

    def reduced_stats(self) -> dict[str, float]:
        """Means of the recorded stats since the last call, averaged over processes (collective)."""
        keys = sorted(self.stats)
        if not keys:
            return {}
        means = self.group.mean(torch.stack([torch.stack(self.stats[k]).mean() for k in keys]).to(self.device))
        self.stats.clear()
        return dict(zip(keys, means.tolist()))


# --------------------------------------------------------------------------- the loop


def training_loop(cfg: TrainingConfig, accelerator: Any, options: RunOptions) -> RunResult:
    """Train until ``min(train.total_kimg, options.stop_kimg)``; returns counters and the last checkpoint.

    The loop runs steps; ``Schedule`` says what falls due after each, ``Reporter`` writes it.
    """
    trainer = Trainer(cfg, accelerator, options)
    main = accelerator.is_main_process
    schedule = Schedule.from_config(cfg)
    reporter = Reporter(cfg, accelerator, trainer.group, Path(options.run_dir), options.tracker)
    tick_index = reporter.start(options.resume is not None, trainer.progress.cur_nimg)
    result = RunResult(progress=trainer.progress, last_checkpoint=trainer.last_checkpoint)
    if trainer.progress.cur_nimg == 0:
        reporter.write_reals(trainer.dataset)
        reporter.write_samples(trainer.G_ema, f"fakes-{ckpt_io.checkpoint_name(0)}", 0, trainer.device)
    if trainer.progress.cur_nimg >= trainer.stop_nimg:
        log.info(
            "already at kimg %.3f, at or past the stop point kimg %.3f: nothing to train "
            "(resume with --set train.total_kimg=K to train further)",
            trainer.progress.kimg,
            trainer.stop_nimg / 1000,
        )
    else:
        log.info(
            "training %s: %d process(es) x %d images x %d accumulation round(s) = batch %d, until kimg %.3f",
            cfg.name,
            trainer.world,
            trainer.batch_per_gpu,
            trainer.accum,
            cfg.train.batch,
            trainer.stop_nimg / 1000,
        )
    # A position past the total (resumed beyond --max-kimg) breaks tqdm's time-remaining field.
    bar = tqdm(
        total=trainer.stop_nimg / 1000,
        initial=min(trainer.progress.cur_nimg, trainer.stop_nimg) / 1000,
        unit="kimg",
        disable=not main,
        bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}{postfix}]",
    )
    tick_start, tick_nimg = time.time(), trainer.progress.cur_nimg
    # Seconds spent since the last tick on logging, sample grids, checkpoints and metrics: reported
    # as timing/maintenance_sec and left out of sec/tick and sec/kimg (as StyleGAN2-ADA does), so
    # the training speed does not jump whenever a checkpoint or an evaluation falls into a tick.
    maintenance = 0.0
    saved_at = trainer.progress.cur_nimg if options.resume else -1
    try:  # closed on Ctrl-C or an error too, so the last line on the terminal is the message, not the bar
        while trainer.progress.cur_nimg < trainer.stop_nimg:
            prev = trainer.progress.cur_nimg
            trainer.train_step()
            cur = trainer.progress.cur_nimg
            # The last step may overshoot the stop point by part of a batch: keep the bar within its total.
            # Set the position rather than adding deltas, whose float sum can end past the total
            # (tqdm then shows a negative time remaining).
            bar.update(min(cur, trainer.stop_nimg) / 1000 - bar.n)
            done = cur >= trainer.stop_nimg
            due = schedule.due(prev, cur, done)
            now = time.time()
            if due.tick:
                tick_index += 1
                train_sec = now - tick_start - maintenance
                rec = {
                    "tick": tick_index,
                    "kimg": cur / 1000,
                    "cur_nimg": cur,
                    "step": trainer.progress.step,
                    "sec_per_tick": train_sec,
                    "sec_per_kimg": train_sec / max((cur - tick_nimg) / 1000, 1e-9),
                    "timing/maintenance_sec": maintenance,
                    "memory_gb": _memory_gb(trainer.device),
                    "timestamp": now,
                    "lr/G": trainer.opt_G.param_groups[0]["lr"],
                    "lr/D": trainer.opt_D.param_groups[0]["lr"],
                    **trainer.reduced_stats(),
                }
                rec.update(trainer.ada.log_values())
                tick_start, tick_nimg, maintenance = now, cur, 0.0
                reporter.tick(rec, step=cur)
                if main:
                    bar.set_postfix_str(f"G {rec.get('Loss/G_main', float('nan')):.3f} D {rec.get('Loss/D_main', float('nan')):.3f}")
                result.ticks.append(rec)
            if due.samples:
                reporter.write_samples(trainer.G_ema, f"fakes-{ckpt_io.checkpoint_name(cur)}", cur, trainer.device)
            if due.checkpoint:
                trainer.save_checkpoint()
                saved_at = cur
            if due.metrics:
                reporter.run_metrics(trainer.G_ema, cur, trainer.device)
            maintenance += time.time() - now
            signum = trainer.stop_signal(options.signals)
            if signum is not None and not done:
                trainer.stop(signum, options.signals, saved_at)
    finally:
        bar.close()
    trainer.check_finite()
    if saved_at != trainer.progress.cur_nimg:  # e.g. resumed at or past the stop point
        trainer.save_checkpoint()
    result.progress, result.last_checkpoint = trainer.progress, trainer.last_checkpoint
    return result
