import pytest
import torch
from torch import nn

from auditcam.config import AnalysisOptions, Checks
from auditcam.data import open_dataset
from auditcam.demo.models import PREPROCESSING, TinyCNN
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.errors import InputError
from auditcam.integrations.monitor import MULTILABEL_MONITOR, Monitor

pytestmark = pytest.mark.slow  # each step is a whole audit of the subset


class SplitDataset(torch.utils.data.Dataset):
    """The synthetic split as audit items (model input, mask, label, site)."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split.labels)

    def __getitem__(self, i):
        image = PREPROCESSING.normalise(self.split.images[i].float() / 255.0)
        return {
            "image": image,
            "mask": self.split.masks[i],
            "label": int(self.split.labels[i]),
            "attributes": {"site": self.split.sites[i]},
        }


@pytest.fixture
def split():
    return make_split(48, agreement={"A": 1.0, "B": 1.0}, seed=3)


def _monitor(split, **kwargs):
    from auditcam.data.custom import WrappedDataset

    data = WrappedDataset(SplitDataset(split), classes=CLASSES, preprocessing=PREPROCESSING)
    return Monitor(
        data, samples=12, checks=Checks(), analysis=AnalysisOptions(bootstrap=20, min_group_size=2), **kwargs
    )


def _train(split, monitor=None, steps=6):
    torch.manual_seed(0)
    model = TinyCNN()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    inputs = PREPROCESSING.normalise(split.images.float() / 255.0)
    losses = []
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(inputs))[:16]  # the global RNG: the monitor must not move it
        loss = nn.functional.cross_entropy(nn.functional.dropout(model(inputs[idx]), 0.1), split.labels[idx])
        optimiser.zero_grad()
        loss.backward()
        if monitor is not None and step % 2 == 1:
            monitor.step(model, step=step)  # between backward and the update: grads must survive
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses, model


def test_a_monitored_training_run_gives_the_same_losses_and_weights(split):
    plain, model_a = _train(split)
    watched, model_b = _train(split, _monitor(split))
    assert watched == plain
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_step_restores_the_model_exactly_and_returns_the_checks(split):
    torch.manual_seed(1)
    model = TinyCNN().train()
    model.features[0].weight.requires_grad_(False)
    model.features[1].eval()
    seen = []
    handle = model.classifier.register_forward_hook(lambda *_: seen.append(1))
    model(torch.zeros(2, 3, 64, 64)).sum().backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    training = {n: m.training for n, m in model.named_modules()}
    hooks = {n: (dict(m._forward_hooks), dict(m._backward_hooks)) for n, m in model.named_modules()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = _monitor(split).step(model, step=7)
        assert torch.is_autocast_enabled("cpu")
    assert {n: m.training for n, m in model.named_modules()} == training
    assert {n: p.requires_grad for n, p in model.named_parameters()}["features.0.weight"] is False
    assert sum(p.requires_grad for p in model.parameters()) == len(list(model.parameters())) - 1
    assert {n: (dict(m._forward_hooks), dict(m._backward_hooks)) for n, m in model.named_modules()} == hooks
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    for name, param in model.named_parameters():
        assert (param.grad is None) == (grads[name] is None) and (
            param.grad is None or torch.equal(param.grad, grads[name])
        )
    handle.remove()
    # the values are the audit's: the same model outside autocast gives the same checks
    again = _monitor(split).step(model, step=7)
    assert result.step == 7 and result.values == again.values
    assert set(result.values) == {"background_reliant_rate"}  # the defaults; the location test is off in a monitor
    assert result.values["background_reliant_rate"] is not None
    assert result.metrics["check/background_reliant_rate/value"] == result.values["background_reliant_rate"]


def test_each_step_goes_to_tensorboard_with_images_at_its_step(split, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monitor = _monitor(split, log=f"tensorboard:{tmp_path}", gallery_size=2)
    torch.manual_seed(2)
    model = TinyCNN()
    results = [monitor.step(model, step=s) for s in (10, 20)]
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    series = events.Scalars("check/background_reliant_rate/value")
    assert [e.step for e in series] == [10, 20]
    assert [e.value for e in series] == pytest.approx([r.values["background_reliant_rate"] for r in results])
    means = sorted(t for t in events.Tags()["images"] if t.startswith("mean_heatmap/"))
    present = sorted({CLASSES[int(split.labels[i])] for i in range(len(split.labels))})
    assert set(means) <= {f"mean_heatmap/{c}" for c in present} and means
    assert [e.step for e in events.Images(means[0])] == [10, 20]


def test_the_location_test_runs_only_every_location_every_steps(split, monkeypatch):
    import auditcam.probes.occlusion as occlusion

    real, probed = occlusion.run_strategies, []

    def counted(*args, **kwargs):
        probed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(occlusion, "run_strategies", counted)
    torch.manual_seed(4)
    model = TinyCNN()
    default = _monitor(split).step(model, step=0)
    assert probed == [] and "location_shortcut" not in default.values  # a default step: no strategies, no occlusion
    every_two = _monitor(split, location_every=2)
    checks = [set(every_two.step(model, step=s).values) for s in range(3)]
    assert len(probed) == 2  # steps 0 and 2
    assert ["location_shortcut" in names for names in checks] == [True, False, True]


def test_a_multilabel_dataset_is_refused_with_one_line(tmp_path):
    from tests import multilabel as shapes

    manifest = shapes.write_shapes(tmp_path, 6)
    data = open_dataset(manifest, classes=shapes.CLASSES, preprocessing=shapes.PREPROCESSING, task="multilabel")
    with pytest.raises(InputError) as info:
        Monitor(data, samples=4)
    assert str(info.value) == MULTILABEL_MONITOR
