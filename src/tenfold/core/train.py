"""One small trainer: loop, progress bar, EMA, evaluation hook, checkpoints, resume, DDP.

Determinism: every random draw of step ``s`` comes from a generator seeded by
``(seed, s)`` (see :class:`StepContext`), never from a running global RNG. The data order,
the diffusion noise and so on are therefore a pure function of the step, so a run resumed
from a checkpoint ends bit-identical to an uninterrupted one on the CPU, and a data-parallel
run draws the same global batch and noise as a single process (each rank takes its shard).

Multi-process: launch the same script under ``torchrun --nproc-per-node N``; the trainer
joins the process group from the environment (gloo on the CPU, NCCL on GPUs), wraps the
model in DDP, shards each global batch and logs the all-reduced loss.

Usage::

    trainer = Trainer(model, loss_fn, (x, y), TrainConfig(steps=1000, batch_size=64))
    history = trainer.fit()
"""

from __future__ import annotations

import copy
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .io import CheckpointError, load_tensors, save_tensors
from .validate import check_config

__all__ = [
    "load_weights",
    "TrainConfig",
    "StepContext",
    "Trainer",
    "init_distributed",
    "step_generator",
    "batch_indices",
]

MAX_BATCH = 2**24  # indices of one global batch (a larger batch would not fit in memory)
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant, keeps (seed, step) seeds apart


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded by (seed, step, stream) alone."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + stream * _MIX) % (2**63 - 1))
    return g


@functools.lru_cache(maxsize=4)
def _epoch_perm(n: int, seed: int, epoch: int) -> Tensor:
    """The order of epoch ``epoch`` (cached: a step needs at most two epochs' orders)."""
    return torch.randperm(n, generator=step_generator(seed, epoch, stream=1))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Global batch of step ``step``: consecutive slices of per-epoch permutations of
    range(n), seeded by (seed, epoch), so each epoch visits every sample once -> (B,)."""
    if n < 1:
        raise ValueError("cannot draw batches from an empty dataset")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be in [1, {MAX_BATCH}], got {batch_size}")
    if batch_size > 64 * n:
        raise ValueError(
            f"batch_size={batch_size} is over 64 epochs of the {n}-sample dataset; lower it"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    parts, start, left = [], step * batch_size, batch_size
    while left:
        epoch, pos = divmod(start, n)
        take = min(left, n - pos)
        parts.append(_epoch_perm(n, seed, epoch)[pos : pos + take])
        start, left = start + take, left - take
    return torch.cat(parts).long()


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings. ``batch_size`` is the global batch (split across DDP ranks)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" or "cosine" (after warmup)
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    eval_every: int = 0  # 0: evaluate only at the end
    ckpt_every: int = 0  # 0: no periodic checkpoints
    log_every: int = 10
    seed: int = 0
    progress: bool = True
    desc: str = "train"

    def __post_init__(self):
        check_config(
            self,
            steps=">=1",
            batch_size="[1,16777216]",
            lr=">0",
            weight_decay=">=0",
            betas="[0,1)",
            warmup_steps=">=0",
            schedule=("constant", "cosine"),
            grad_clip=">0",
            ema_decay="(0,1)",
            eval_every=">=0",
            ckpt_every=">=0",
            log_every=">=0",
        )

    def lr_factor(self, step: int) -> float:
        """Multiplier of every group's base LR at ``step`` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            span = max(self.steps - self.warmup_steps, 1)
            prog = min((step - self.warmup_steps) / span, 1.0)
            return 0.5 * (1 + math.cos(math.pi * prog))
        return 1.0


@dataclass
class StepContext:
    """What a loss function gets besides the model and its batch.

    ``generator`` is seeded by (seed, step) and is the same on every rank; use
    :meth:`randn` / :meth:`rand` to draw per-sample randomness for the *global* batch and
    get this rank's shard, so that DDP matches a single process exactly.
    """

    step: int
    generator: torch.Generator
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    metrics: dict[str, float] = field(default_factory=dict)

    def log(self, **values: float | Tensor) -> None:
        """Record named scalars of this step (e.g. a discriminator's accuracy): they join
        the step's history record and the progress bar (under DDP, this rank's shard)."""
        for k, v in values.items():
            if k in ("step", "loss", "lr", "grad_norm"):
                raise ValueError(f"ctx.log: {k!r} is a name the trainer records itself")
            self.metrics[k] = float(v.detach()) if isinstance(v, Tensor) else float(v)

    def shard(self, t: Tensor) -> Tensor:
        """This rank's rows of a global-batch tensor."""
        n = t.shape[0] // self.world_size
        return t[self.rank * n : (self.rank + 1) * n]

    def randn(self, *local_shape: int) -> Tensor:
        g = torch.randn(
            (local_shape[0] * self.world_size, *local_shape[1:]), generator=self.generator
        )
        return self.shard(g).to(self.device)

    def rand(self, *local_shape: int) -> Tensor:
        g = torch.rand(
            (local_shape[0] * self.world_size, *local_shape[1:]), generator=self.generator
        )
        return self.shard(g).to(self.device)


LossFn = Callable[[nn.Module, Any, StepContext], Tensor]
EvalFn = Callable[[nn.Module, int], dict[str, float]]


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns (rank, world_size, device). Single process: (0, 1, cpu or cuda:0).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
            torch.cuda.set_device(local)
            return rank, world, torch.device("cuda", local)
        return rank, world, torch.device("cpu")
    return 0, 1, torch.device("cuda" if cuda else "cpu")


def load_weights(model: nn.Module, path: str | os.PathLike, ema: bool = True) -> nn.Module:
    """Load the weights of a trainer checkpoint into ``model`` (the EMA copy when the
    checkpoint has one and ``ema`` is true). Raises CheckpointError on a damaged file or a
    checkpoint of another architecture."""
    tensors, _ = load_tensors(path)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not match this model: {e}") from None
    return model


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch, ctx)`` (mean over the local batch).

    ``data`` is either a sequence of tensors with a common first dimension (each step indexes
    its shard of the global batch) or a callable ``data(ctx) -> batch`` for data made on the fly
    (draw from ``ctx.randn`` / ``ctx.generator`` to stay deterministic). ``optimizer`` defaults
    to AdamW; pass your own (e.g. with per-parameter learning rates) and the trainer scales
    each group's LR from its ``initial_lr`` by the schedule.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Sequence[Tensor] | Callable[[StepContext], Any],
        config: TrainConfig,
        optimizer: torch.optim.Optimizer | None = None,
        eval_fn: EvalFn | None = None,
        ckpt_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
    ):
        self.cfg = config
        self.rank, self.world, default_device = init_distributed()
        self.device = torch.device(device) if device is not None else default_device
        if config.batch_size % self.world:
            raise ValueError(
                f"batch_size={config.batch_size} is not divisible by the {self.world} data-parallel processes"
            )
        self.model = model.to(self.device)
        self.loss_fn, self.eval_fn = loss_fn, eval_fn
        if callable(data):
            self.data, self.n = data, None
        else:
            data = tuple(data)
            if not data or any(d.shape[0] != data[0].shape[0] for d in data):
                raise ValueError("data tensors must be non-empty and share their first dimension")
            self.data, self.n = data, data[0].shape[0]
            if config.batch_size > self.n:
                raise ValueError(
                    f"batch_size={config.batch_size} is larger than the dataset "
                    f"({self.n} samples): a batch would repeat samples; lower batch_size"
                )
        self.optimizer = optimizer or torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        for g in self.optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.ema: nn.Module | None = None
        if config.ema_decay is not None:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ddp = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.ckpt_path = Path(ckpt_dir) / "last.safetensors" if ckpt_dir is not None else None
        if self.ckpt_path is not None and self.rank == 0:
            try:  # find out now, not at the first checkpoint, that the folder cannot be used
                self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(
                    f"ckpt_dir={ckpt_dir}: cannot create the checkpoint folder "
                    f"({e.strerror or e}); give a writable folder"
                ) from None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []

    # ---------------------------------------------------------------- batches
    def _batch(self, ctx: StepContext) -> Any:
        if self.n is None:
            return self.data(ctx)
        idx = ctx.shard(batch_indices(self.n, self.cfg.batch_size, ctx.step, self.cfg.seed))
        return tuple(d[idx].to(self.device) for d in self.data)

    # ---------------------------------------------------------------- checkpoints
    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        osd = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, st in osd["state"].items():
            for k, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{pid}.{k}"] = v
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        meta = {
            "step": self.step,
            "config": asdict(self.cfg),
            "param_groups": osd["param_groups"],
            "optim_scalars": scalars,
            "history": self.history,
            "evals": self.evals,
        }
        return tensors, meta

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        path = Path(path) if path is not None else self.ckpt_path
        if path is None:
            raise ValueError("no checkpoint path: pass ckpt_dir to Trainer or a path here")
        if self.rank == 0:
            tensors, meta = self.state_tensors()
            save_tensors(path, tensors, meta)
        if self.world > 1:
            dist.barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        path = Path(path) if path is not None else self.ckpt_path
        tensors, meta = load_tensors(path, device=self.device)
        try:
            self._restore(tensors, meta)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: does not match this model/optimizer: {e}") from None

    def _check_meta(self, meta: dict[str, Any]) -> None:
        """The metadata of a checkpoint, checked before any of it is used (ValueError)."""
        step = meta.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.cfg.steps:
            raise ValueError(f"step must be an integer in [0, {self.cfg.steps}], got {step!r}")
        groups = meta.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.optimizer.param_groups):
            raise ValueError(
                f"param_groups must be a list of {len(self.optimizer.param_groups)} groups, "
                f"got {type(groups).__name__}"
                + (f" of {len(groups)}" if isinstance(groups, list) else "")
            )
        for i, (g, mine) in enumerate(zip(groups, self.optimizer.param_groups)):
            if not isinstance(g, dict) or not isinstance(g.get("params"), list):
                raise ValueError(f"param_groups[{i}] must be an object with a params list")
            if len(g["params"]) != len(mine["params"]):
                raise ValueError(
                    f"param_groups[{i}] holds {len(g['params'])} parameters, the optimizer "
                    f"{len(mine['params'])}"
                )
            for k in ("lr", "initial_lr"):
                v = g.get(k, 0.0)
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, float))
                    or not math.isfinite(v)
                    or v < 0
                ):
                    raise ValueError(
                        f"param_groups[{i}].{k} must be a finite number >= 0, got {v!r}"
                    )
        scalars = meta.get("optim_scalars", {})
        if not isinstance(scalars, dict) or not all(
            isinstance(v, dict) and str(k).isdigit() for k, v in scalars.items()
        ):
            raise ValueError("optim_scalars must map parameter ids to objects")
        for key in ("history", "evals"):
            recs = meta.get(key, [])
            if not isinstance(recs, list) or not all(
                isinstance(r, dict) and isinstance(r.get("step"), int) for r in recs
            ):
                raise ValueError(f"{key} must be a list of records with an integer step")

    def _restore(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self._check_meta(meta)

        def sub(prefix):
            n = len(prefix)
            return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.model.load_state_dict(sub("model."), strict=True)
        if self.ema is not None:
            ema = sub("ema.")
            self.ema.load_state_dict(ema if ema else self.model.state_dict(), strict=True)
        state: dict[int, dict[str, Any]] = {}
        for k, v in sub("optim.").items():
            pid, key = k.split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        for pid, kv in meta.get("optim_scalars", {}).items():
            state.setdefault(int(pid), {}).update(kv)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))
        self.evals = list(meta.get("evals", []))

    # ---------------------------------------------------------------- loop
    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        # Warm-up of the decay (as in timm/EDM) so early EMA weights are not stuck at init.
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(b)

    def eval_model(self) -> nn.Module:
        """The model to evaluate: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.model

    def _evaluate(self) -> None:
        if self.eval_fn is None:
            return
        rec = None
        if self.rank == 0:
            was = self.model.training
            self.model.eval()
            metrics = self.eval_fn(self.eval_model(), self.step)
            self.model.train(was)
            rec = {"step": self.step, **{k: float(v) for k, v in metrics.items()}}
        if self.world > 1:  # every rank keeps the same evaluation history
            box = [rec]
            dist.broadcast_object_list(box, src=0)
            rec = box[0]
        self.evals.append(rec)

    def fit(self, resume: bool = False, stop_after: int | None = None) -> list[dict[str, float]]:
        """Train to ``config.steps``. ``resume`` continues from the checkpoint in ``ckpt_dir``
        if one exists; ``stop_after`` ends the call early at that step (as a crash would)."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        if resume and self.ckpt_path is not None and self.ckpt_path.exists():
            self.load_checkpoint()
        end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=cfg.desc,
            disable=not cfg.progress or self.rank != 0,
            dynamic_ncols=True,
            leave=False,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,  # keep logs of CI/make short
        )
        self.model.train()
        t_last, n_last = time.perf_counter(), self.step
        while self.step < end:
            ctx = StepContext(
                self.step, step_generator(cfg.seed, self.step), self.rank, self.world, self.device
            )
            batch = self._batch(ctx)
            f = cfg.lr_factor(self.step)
            for g in self.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * f
            loss = self.loss_fn(self.ddp, batch, ctx)
            if not isinstance(loss, Tensor):
                raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at step {self.step}: lower the LR or clip gradients"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = None
            if cfg.grad_clip is not None:
                gnorm = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), cfg.grad_clip
                ).item()
                if not math.isfinite(gnorm):
                    raise FloatingPointError(
                        f"gradient norm is {gnorm} at step {self.step} (the loss was finite): "
                        "a layer produced non-finite gradients"
                    )
            self.optimizer.step()
            self.step += 1
            self._update_ema()
            lval = loss.detach()
            if self.world > 1:
                dist.all_reduce(lval)
                lval = lval / self.world
            rec = {"step": self.step, "loss": lval.item(), "lr": cfg.lr * f}
            if gnorm is not None:
                rec["grad_norm"] = gnorm
            rec.update(ctx.metrics)
            self.history.append(rec)
            bar.update(1)
            if cfg.log_every and self.step % cfg.log_every == 0:
                now = time.perf_counter()
                sps = (self.step - n_last) * cfg.batch_size / max(now - t_last, 1e-9)
                t_last, n_last = now, self.step
                extra = {k: f"{v:.3g}" for k, v in ctx.metrics.items()}
                bar.set_postfix(
                    loss=f"{rec['loss']:.4f}", **extra, samples_per_s=f"{sps:.0f}", refresh=False
                )
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step != cfg.steps:
                self._evaluate()
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.ckpt_path is not None:
                self.save_checkpoint()
        bar.close()
        if self.step == cfg.steps and (not self.evals or self.evals[-1]["step"] != self.step):
            # Save first: a crash in the final evaluation must not lose the training. A
            # resumed run finds the last step done and only evaluates.
            if self.ckpt_path is not None:
                self.save_checkpoint()
            self._evaluate()
            if self.ckpt_path is not None:
                self.save_checkpoint()
        return self.history
