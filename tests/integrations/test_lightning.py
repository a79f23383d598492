import pytest
import torch
from torch import nn

from tests.integrations.test_monitor import _monitor, split  # noqa: F401  (fixture)

pl = pytest.importorskip("lightning.pytorch")
pytestmark = pytest.mark.slow


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        from auditcam.demo.models import TinyCNN

        self.net = TinyCNN()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _index):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Recorder(pl.loggers.Logger):
    """A Lightning logger that keeps what it was given."""

    def __init__(self):
        super().__init__()
        self.logged = []

    name, version = "recorder", 0

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_the_callback_audits_at_each_epoch_end_and_reaches_the_trainers_loggers(split):  # noqa: F811
    from auditcam.demo.models import PREPROCESSING
    from auditcam.integrations.lightning import AuditCallback

    torch.manual_seed(0)
    inputs = PREPROCESSING.normalise(split.images.float() / 255.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, split.labels), batch_size=16)
    callback, recorder = AuditCallback(_monitor(split)), Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback],
        logger=recorder,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        log_every_n_steps=1,
    )
    trainer.fit(Module(), loader)
    assert [r.step for r in callback.history] == [3, 6]  # 3 batches per epoch
    audited = [(step, m) for step, m in recorder.logged if "auditcam/check/background_reliant_rate/value" in m]
    assert [step for step, _ in audited] == [3, 6]
    assert audited[1][1]["auditcam/check/background_reliant_rate/value"] == pytest.approx(
        callback.history[1].values["background_reliant_rate"]
    )
