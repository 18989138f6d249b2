"""Checkpoints and the optimisation loop of the training commands (``adapt``, ``distil-long``).

A run writing the folder ``out`` keeps its state in ``<out>.checkpoint/state.pt`` (weights,
optimizer and scheduler state, RNG state, step, losses) and a *key*: the options that define
the run. Resuming with different options is refused, naming the options that differ, so no
run continues on someone else's trajectory; the checkpoint goes once the output is written.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..config import ADAPT_WARMUP
from ..errors import ConflictError, SparsefinderError
from ..files import atomic_dir, atomic_write_bytes, atomic_write_json

__all__ = ["CHECKPOINT_FILE", "TrainingRun", "check_output", "checkpoint_dir", "load_checkpoint", "save_checkpoint",
           "save_trained"]

CHECKPOINT_FILE = "state.pt"


def checkpoint_dir(out: str | Path) -> Path:
    """Folder of the checkpoint of a run writing ``out``: ``<out>.checkpoint`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".checkpoint")


def check_output(out: Path) -> None:
    """Fail early unless ``out`` can be created: absent or empty, and its parent writable."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"output {out} already exists and is not an empty folder; choose another")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SparsefinderError(f"cannot write the output {out}: {exc.strerror or exc}") from None


def save_checkpoint(folder: Path, state: dict) -> None:
    """Write ``state`` (with its ``key``) to ``folder/state.pt`` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(folder / CHECKPOINT_FILE, buf.getvalue())


def load_checkpoint(folder: Path, key: dict, resume: bool) -> dict | None:
    """The saved state of the run ``key`` when resuming (``None`` when there is none yet).

    Without ``resume`` an existing checkpoint is an error, so no run is silently thrown away;
    with it, a checkpoint of other options is an error naming them.
    """
    file = folder / CHECKPOINT_FILE
    if not file.is_file():
        return None
    if not resume:
        raise ConflictError(f"a checkpoint of an unfinished run exists in {folder}: pass --resume, or delete it")
    state = torch.load(file, map_location="cpu", weights_only=False)
    if state["key"] != key:
        diff = sorted(k for k in key if state["key"].get(k) != key[k])
        raise ConflictError(f"checkpoint {file} is from a different run (differs in {', '.join(diff)}); "
                            f"delete it or repeat the same options")
    return state


class TrainingRun:
    """The optimizer, schedule, checkpoints and progress bar of a distillation run (``adapt``, ``distil-long``).

    AdamW (no weight decay) on the trainable parameters of ``model`` with a linear warm-up over
    :data:`~sparsefinder.config.ADAPT_WARMUP` of the steps, then linear decay; gradients clipped
    to norm 1. ``state`` (from :func:`load_checkpoint`) restores weights, optimizer, schedule, RNG
    and losses, so a resumed run follows the same trajectory. A checkpoint is written every
    ``checkpoint_every`` steps and at the last step of this call (``stop_after`` steps at most).
    """

    def __init__(self, model: torch.nn.Module, *, key: dict, folder: Path, steps: int, lr: float,
                 checkpoint_every: int, stop_after: int | None, state: dict | None, desc: str, unit: str,
                 progress: bool) -> None:
        self.model, self.key, self.folder, self.steps = model, key, folder, steps
        self.checkpoint_every = checkpoint_every
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(ADAPT_WARMUP * steps), steps)
        self.start, self.losses, self.elapsed = 0, [], 0.0
        if state is not None:
            model.load_state_dict(state["student"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            self.start, self.losses, self.elapsed = state["step"], state["losses"], state["elapsed_s"]
        folder.mkdir(parents=True, exist_ok=True)
        self.end = steps if stop_after is None else min(steps, self.start + stop_after)
        self.bar = tqdm(total=steps, initial=self.start, unit=unit, desc=desc, disable=not progress)
        self.t0 = time.perf_counter()

    def step_range(self) -> range:
        """The steps of this call."""
        return range(self.start, self.end)

    def update(self, step: int, loss: torch.Tensor, **postfix: str) -> None:
        """Back-propagate ``loss`` of ``step``, take the optimizer step, and checkpoint when due."""
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        self.bar.set_postfix(loss=f"{self.losses[-1]:.4f}", **postfix)
        self.bar.update(1)
        done = step + 1
        if done % self.checkpoint_every == 0 or done == self.end:
            save_checkpoint(self.folder, {"key": self.key, "step": done, "student": self.model.state_dict(),
                                          "optimizer": self.optimizer.state_dict(),
                                          "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                                          "losses": self.losses,
                                          "elapsed_s": self.elapsed + time.perf_counter() - self.t0})

    def finish(self) -> dict:
        """Close the bar; the run so far: ``status`` (complete or interrupted), ``step``, ``losses``, ``elapsed_s``."""
        self.bar.close()
        self.elapsed += time.perf_counter() - self.t0
        return {"status": "complete" if self.end == self.steps else "interrupted", "step": self.end,
                "losses": self.losses, "elapsed_s": self.elapsed}


def save_trained(out: Path, model: torch.nn.Module, tokenizer, record_file: str, record: dict,
                 write_card: Callable[[Path, dict], None]) -> dict:
    """Write the finished run's folder ``out`` atomically (weights, tokenizer, ``record_file``, model card),
    then drop its checkpoint; returns ``record``."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / record_file, record)
        write_card(tmp, record)
    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
    return record
