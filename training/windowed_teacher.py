"""The windowed softmax teacher of a long document (issue 13).

The softmax encoder reads at most ``window`` tokens, so it sees a long document as sliding
windows ``[CLS] body[s : s + window − 2] [SEP]`` whose starts step by ``stride`` (the last one
ends at the document's end). Its view of the document is:

- per body token, its last hidden state in the window where it sits **most centrally** (the
  largest distance to that window's ends; the earlier window on ties), so every token is read
  with as much context on both sides as the teacher allows;
- for the document, the **mean of the window embeddings** (each the L2-normalised mean of its
  window's last hidden states), L2-normalised.

:func:`windowed_targets` computes both; the student reads the whole ``[CLS] body [SEP]`` at once
(:mod:`sparsefinder.training.long_distill`) and :func:`long_fidelity` measures how close it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..model import mean_pool

__all__ = ["WindowedTargets", "central_window", "long_fidelity", "student_states", "window_starts", "windowed_targets"]


@dataclass(frozen=True)
class WindowedTargets:
    """The teacher's view of one document of ``m`` body tokens.

    Attributes
    ----------
    tokens : Tensor, float32, shape (m, D)
        Per body token, its state in the window where it is most central.
    embedding : Tensor, float32, shape (D,)
        The normalised mean of the window embeddings.
    windows : int
        Teacher windows read.
    """

    tokens: Tensor
    embedding: Tensor
    windows: int


def window_starts(m: int, room: int, stride: int) -> list[int]:
    """Starts of windows of ``room`` body tokens over ``m`` tokens: ``0, stride, …`` and ``m − room`` last."""
    if room < 1 or stride < 1:
        raise ValueError(f"room and stride must be positive, got {room} and {stride}")
    if m <= room:
        return [0]
    return [*range(0, m - room, stride), m - room]


def central_window(m: int, starts: list[int], room: int) -> Tensor:
    """For each of ``m`` positions, the index of the window where it is farthest from both ends ``(m,)``."""
    pos = torch.arange(m)[:, None]
    first = torch.tensor(starts)[None, :]
    inside = (pos >= first) & (pos < first + room)
    margin = torch.minimum(pos - first, first + room - 1 - pos).masked_fill(~inside, -1)
    return margin.argmax(1)  # the first maximum: the earlier window on ties


@torch.no_grad()
def windowed_targets(teacher: PreTrainedModel, body: list[int], cls_id: int, sep_id: int, window: int,
                     stride: int, batch: int = 4) -> WindowedTargets:
    """The teacher's targets for the document ``[CLS] body [SEP]`` read in windows of ``window`` tokens."""
    room = window - 2
    m = len(body)
    starts = window_starts(m, room, stride)
    ids = torch.tensor([[cls_id, *body[s:s + room], sep_id] for s in starts])
    device = next(teacher.parameters()).device
    states = torch.cat([teacher(input_ids=chunk.to(device), attention_mask=torch.ones_like(chunk, device=device)
                                ).last_hidden_state.float().cpu() for chunk in ids.split(batch)])
    owner = central_window(m, starts, room)
    offset = torch.arange(m) - torch.tensor(starts)[owner] + 1  # + 1: the window's [CLS]
    embedding = mean_pool(states, torch.ones(states.shape[:2])).mean(0)
    return WindowedTargets(states[owner, offset], torch.nn.functional.normalize(embedding, dim=-1), len(starts))


def student_states(student: PreTrainedModel, body: list[int], cls_id: int, sep_id: int, **kwargs) -> Tensor:
    """Last hidden states ``(m + 2, D)`` of the student reading ``[CLS] body [SEP]`` at once (``kwargs`` reach attention)."""
    device = next(student.parameters()).device
    ids = torch.tensor([[cls_id, *body, sep_id]], device=device)
    return student(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).last_hidden_state[0]


def long_fidelity(states: list[Tensor], targets: list[WindowedTargets]) -> dict[str, float]:
    """Fidelity of student states ``(m + 2, D)`` per document to the windowed teacher's targets.

    ``token_cosine_mean``/``_worst``: per document the mean cosine of body-token states to their
    targets, then the mean and the worst over documents; ``embedding_cosine_mean``: of document
    embeddings; ``nearest_own``: how many documents' student embedding is nearest (cosine) to
    their own teacher embedding among all the documents'.
    """
    token_cos, student_emb = [], []
    for h, t in zip(states, targets):
        h = h.detach().float().cpu()
        token_cos.append(float(torch.nn.functional.cosine_similarity(h[1:-1], t.tokens, dim=-1).mean()))
        student_emb.append(mean_pool(h[None], torch.ones(1, h.shape[0]))[0])
    s, t = torch.stack(student_emb), torch.stack([x.embedding for x in targets])
    sims = s @ t.T
    own = sims.argmax(1) == torch.arange(len(targets))
    return {"documents": len(targets), "token_cosine_mean": sum(token_cos) / len(token_cos),
            "token_cosine_worst": min(token_cos), "embedding_cosine_mean": float(sims.diagonal().mean()),
            "nearest_own": int(own.sum())}
