"""Shared fixtures: seeded generators, tiny models and the demo run (built once per session)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn


@pytest.fixture
def gen() -> torch.Generator:
    """A local, seeded generator: tests never depend on or disturb the global RNG."""
    return torch.Generator().manual_seed(1234)


class TinyNet(nn.Module):
    """conv -> relu -> conv (target) -> relu -> global pool -> linear; 8x8 feature maps at 16 px."""

    def __init__(self, num_classes: int = 3, inplace: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.features = nn.Conv2d(4, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.features(self.stem(x)))).flatten(1))


@pytest.fixture
def tiny_net() -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TinyNet()


def tiny_vit(num_classes: int = 3) -> nn.Module:
    """torchvision's ViT at 32 px: 8-px patches (a class token + 4 x 4 patch tokens of width 16),
    two blocks. torchvision zero-initialises the head (every logit and gradient 0): redrawn here."""
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=num_classes
    )
    nn.init.normal_(model.heads.head.weight)
    return model.eval()


def tiny_swin(num_classes: int = 3) -> nn.Module:
    """torchvision's Swin at 32 px: channels-last stages of 8 x 8 x 12 and 4 x 4 x 24 (``features``)."""
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=12, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4], num_classes=num_classes
    ).eval()


@pytest.fixture
def vit() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return tiny_vit()


@pytest.fixture
def swin() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return tiny_swin()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    """The full demo (data, both models, both audits), run once for the whole suite."""
    from auditcam.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"), progress=False, log=lambda _text: None)


@pytest.fixture
def small_dataset(tmp_path):
    """12 demo-style samples on disk (64x64, masks, a ``site`` attribute) and their classes."""
    from auditcam.demo import write_split
    from auditcam.demo.synthetic import CLASSES, make_split

    manifest = write_split(make_split(12, agreement={"A": 0.0, "B": 0.0}, seed=5), tmp_path / "data")
    return manifest, CLASSES


@pytest.fixture
def demo_model():
    """An untrained demo TinyCNN with its ModelInfo (seeded)."""
    from auditcam.demo import MODEL_SPEC
    from auditcam.models import load_model_info

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_model_info(MODEL_SPEC)


@pytest.fixture(scope="session")
def shortcut_checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """Three checkpoints of one demo TinyCNN, saved at the start, the middle and the end of
    shortcut training (labels that only the background texture tells: the subject's shape is
    random), and 48 held-out samples where the background is independent of the class. Returns
    (manifest, [epoch0, epoch3, epoch6] safetensors paths)."""
    from safetensors.torch import save_file

    from auditcam.demo import write_split
    from auditcam.demo.models import TinyCNN, train
    from auditcam.demo.synthetic import make_split

    folder = tmp_path_factory.mktemp("checkpoints")
    manifest = write_split(make_split(48, agreement={"A": 0.0, "B": 0.0}, seed=3), folder / "data")
    shortcut = make_split(160, agreement={"A": 0.0, "B": 0.0}, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the weights train() starts from
        save_file(TinyCNN().state_dict(), str(folder / "epoch0.safetensors"))

    def save(epoch: int, _loss: float, model: nn.Module) -> None:
        if epoch + 1 in (3, 6):
            save_file(model.state_dict(), str(folder / f"epoch{epoch + 1}.safetensors"))

    train(shortcut.images, shortcut.textures, epochs=6, batch_size=32, seed=0, on_epoch=save)
    return manifest, [folder / f"epoch{epoch}.safetensors" for epoch in (0, 3, 6)]


@pytest.fixture(scope="session")
def trend_run(shortcut_checkpoints, tmp_path_factory: pytest.TempPathFactory):
    """``auditcam trend`` over the three shortcut checkpoints (a quoted glob, steps from
    ``--step``), logged to MLflow (a SQLite store) and TensorBoard, with a reliance ceiling of
    0.5. Returns (exit code, out folder, MLflow URI, TensorBoard folder)."""
    from auditcam import cli
    from auditcam.demo import MODEL_SPEC

    manifest, weights = shortcut_checkpoints
    folder = tmp_path_factory.mktemp("trend")
    uri, logdir = f"sqlite:///{folder / 'mlflow.db'}", folder / "tb"
    argv = ["trend", "--model", MODEL_SPEC, "--weights", str(weights[0].parent / "epoch*.safetensors")]
    argv += ["--step", r"epoch(\d+)", "--data", str(manifest), "--out", str(folder / "out"), "--no-progress"]
    argv += ["--bootstrap", "200", "--min-group-size", "5", "--gallery-size", "2", "--no-strategies"]
    argv += ["--max-background-reliant-rate", "0.5", "--log", f"mlflow:{uri}", "--log", f"tensorboard:{logdir}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's artifacts go to ./mlruns beside the store
        code = cli.main(argv)
    return code, folder / "out", uri, logdir
