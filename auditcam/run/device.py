"""Where the audit runs: the device, the autocast dtype, and the host-to-device copy of a batch.

On CUDA the DataLoader pins its batches and they are copied with ``non_blocking=True``, so the
copy of batch k+1 overlaps the model's work on batch k; on the CPU neither applies (pinning
would only cost a copy).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from auditcam.errors import InputError
from auditcam.models import model_device

DEVICES = ("auto", "cpu", "cuda")
UNKNOWN_DEVICE = "`device` {name!r}: choose from {choices} (or cuda:N)"
NO_CUDA = "`device` {device}: CUDA is not available on this machine; use `device` cpu"
UNKNOWN_AMP = "`amp` {amp!r}: choose bf16 or fp16"
UNKNOWN_AMP_DTYPE = "`amp`: autocast dtype {dtype}: choose torch.bfloat16 or torch.float16"
FP16_ON_CPU = "`amp` fp16 runs on CUDA only; on the CPU use bf16"


def resolve_device(name: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when available, else the CPU. ``cuda`` without an index picks the process's
    local rank under torchrun (one GPU per process), else the current CUDA device."""
    if isinstance(name, torch.device):
        device = name
    else:
        text = "auto" if name is None else str(name).strip().lower()
        if text == "auto":
            text = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(text)
        except RuntimeError:
            raise InputError(UNKNOWN_DEVICE.format(name=name, choices=", ".join(DEVICES)), "device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(NO_CUDA.format(device=device), "device")
        if device.index is None:
            index = (
                local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
            )
            device = torch.device("cuda", index % torch.cuda.device_count())
    elif device.type != "cpu":
        raise InputError(UNKNOWN_DEVICE.format(name=name, choices=", ".join(DEVICES)), "device")
    return device


def amp_dtype(device: torch.device, amp: bool | str | torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype for ``--amp``: bfloat16 on the CPU; on CUDA bfloat16 where the GPU
    supports it, else float16. ``amp`` may also name the dtype (``bf16``, ``fp16``)."""
    if amp is None or amp is False:
        return None
    if isinstance(amp, torch.dtype):
        dtype = amp
    elif amp is True or str(amp).lower() in ("auto", "true"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    else:
        dtype = {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
        }.get(str(amp).lower())
        if dtype is None:
            raise InputError(UNKNOWN_AMP.format(amp=amp), "amp")
    if dtype not in (torch.bfloat16, torch.float16):
        raise InputError(UNKNOWN_AMP_DTYPE.format(dtype=dtype), "amp")
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError(FP16_ON_CPU, "amp")
    return dtype


def pin_memory(device: torch.device) -> bool:
    """Whether the DataLoader should pin batches: only when they go to a CUDA device."""
    return device.type == "cuda"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its image and mask tensors on ``device`` (asynchronous from pinned memory)."""
    if device.type == "cpu":
        return batch
    moved = dict(batch)
    for key in ("image", "mask", "masks"):
        if key in moved:
            moved[key] = moved[key].to(device, non_blocking=True)
    return moved


@contextlib.contextmanager
def on_device(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """Move ``model`` to ``device`` for the block and back to where it was afterwards, so the
    user's model is left as found (the same Parameter objects; only their storage moves). A CUDA
    device is also the current one for the block, so the DataLoader's pinning thread and every
    process under torchrun work on their own GPU, not all on GPU 0."""
    home = model_device(model)
    current = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with current:
        if home == device:
            yield model
            return
        model.to(device)
        try:
            yield model
        finally:
            model.to(home)
