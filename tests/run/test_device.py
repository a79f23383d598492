"""Devices and autocast: what ``--device`` and ``--amp`` resolve to, and that host-to-device copies
pin and go asynchronous only for CUDA. (This machine has no GPU: the CUDA branches are checked
by their decisions, not by running on one.)"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from auditcam.cli import PARAMETER_FLAGS
from auditcam.config import AuditSettings
from auditcam.errors import InputError
from auditcam.models import model_device
from auditcam.run.device import FP16_ON_CPU, NO_CUDA, amp_dtype, on_device, pin_memory, resolve_device, to_device


def test_cpu_and_auto_resolve_to_a_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(InputError) as error:
        resolve_device("cuda")
    assert str(error.value) == NO_CUDA.format(device="cuda") and error.value.parameter == "device"
    shown = error.value.render(PARAMETER_FLAGS)
    assert shown == "--device cuda: CUDA is not available on this machine; use --device cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu0", "mps"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(InputError, match="choose from auto, cpu, cuda"):
        resolve_device(name)


def test_amp_picks_bfloat16_on_the_cpu_and_refuses_float16_there():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None and amp_dtype(cpu, None) is None
    assert amp_dtype(cpu, True) == torch.bfloat16 and amp_dtype(cpu, "auto") == torch.bfloat16
    assert amp_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(InputError) as error:
        amp_dtype(cpu, "fp16")
    assert str(error.value) == FP16_ON_CPU and error.value.parameter == "amp"
    assert error.value.render(PARAMETER_FLAGS).startswith("--amp fp16 runs on CUDA only")
    with pytest.raises(InputError, match="choose bf16 or fp16"):
        amp_dtype(cpu, "int8")


def test_amp_on_cuda_follows_the_gpus_bfloat16_support(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(cuda, True) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(cuda, True) == torch.bfloat16 and amp_dtype(cuda, "fp16") == torch.float16


def test_only_cuda_batches_are_pinned_and_copied():
    assert not pin_memory(torch.device("cpu")) and pin_memory(torch.device("cuda", 0))
    batch = {"image": torch.zeros(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.bool), "id": ["a", "b"]}
    assert to_device(batch, torch.device("cpu")) is batch


def test_to_device_moves_image_and_mask_without_blocking(monkeypatch):
    """The copy asks for non_blocking (a no-op from pageable memory, asynchronous from pinned)."""
    calls = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("non_blocking"))
        return original(self, "meta")

    monkeypatch.setattr(torch.Tensor, "to", spy)
    batch = {"image": torch.zeros(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.bool), "id": ["a", "b"]}
    moved = to_device(batch, torch.device("cuda", 0))
    assert calls == [True, True] and moved["image"].is_meta and moved["id"] is batch["id"]


def test_a_model_already_on_the_device_is_left_alone(tiny_net):
    before = [p.data_ptr() for p in tiny_net.parameters()]
    assert model_device(tiny_net) == torch.device("cpu")
    with on_device(tiny_net, torch.device("cpu")) as model:
        assert model is tiny_net
    assert [p.data_ptr() for p in tiny_net.parameters()] == before


def test_a_moved_model_goes_back_where_it_was(tiny_net, monkeypatch):
    """Moved for the audit, moved back after, even when the audit fails (the same Parameter objects)."""
    moves = []
    monkeypatch.setattr(type(tiny_net), "to", lambda self, device: moves.append(str(device)) or self)
    monkeypatch.setattr(torch.cuda, "device", lambda device: moves.append(f"current {device}") or nullcontext())
    params = list(tiny_net.parameters())
    with pytest.raises(RuntimeError, match="the audit failed"), on_device(tiny_net, torch.device("cuda", 0)):
        raise RuntimeError("the audit failed")
    assert moves == ["current cuda:0", "cuda:0", "cpu"] and list(tiny_net.parameters()) == params


# bfloat16 keeps 8 bits of mantissa: measured on random-init resnet18/resnet50 at 64-112 px, the
# [0, 1]-normalised maps differ from float32's by at most 0.03 (0.005 on average) and
# subject_share by at most 0.003. The tolerances leave room for other CPUs' kernels.
BF16_MAP_MAX, BF16_MAP_MEAN, BF16_SHARE = 0.05, 0.01, 0.01


def test_bfloat16_maps_agree_with_float32_on_the_cpu(gen):
    import torchvision

    from auditcam.cam import Explainer
    from auditcam.scoring import score

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=4).eval()
    images = torch.randn(8, 3, 112, 112, generator=gen)
    masks = torch.zeros(8, 112, 112, dtype=torch.bool)
    masks[:, 28:84, 20:76] = True
    with Explainer(model) as explainer:
        full = explainer(images)
    with Explainer(model, autocast=amp_dtype(torch.device("cpu"), True)) as explainer:
        half = explainer(images, full.targets)
    assert half.maps["gradcam"].dtype == torch.float32
    difference = (full.normalised("gradcam") - half.normalised("gradcam")).abs()
    assert float(difference.max()) <= BF16_MAP_MAX and float(difference.mean()) <= BF16_MAP_MEAN
    shares = [score(e.maps["gradcam"], masks)["subject_share"] for e in (full, half)]
    assert float((shares[0] - shares[1]).abs().max()) <= BF16_SHARE
    assert torch.equal(full.logits.argmax(1), half.logits.float().argmax(1))


def test_an_audit_under_amp_records_it_and_agrees_with_float32(small_dataset, demo_model):
    from auditcam import LabelledDataset, audit

    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    full = audit(model, dataset, AuditSettings(device="cpu"), model_info=info, progress=False)
    half = audit(model, dataset, AuditSettings(device="cpu", amp=True), model_info=info, progress=False)
    assert full.meta["run"]["amp"] is None and half.meta["run"]["amp"] == "bfloat16"
    gap = (full.samples["subject_share"] - half.samples["subject_share"]).abs()
    assert float(gap.max()) <= BF16_SHARE
