"""A Lightning callback that runs a :class:`~auditcam.integrations.monitor.Monitor` during
training and sends its metrics to the trainer's own loggers too (``auditcam[lightning]``)."""

from __future__ import annotations

from typing import Any

from auditcam.errors import InputError
from auditcam.integrations.monitor import Monitor, StepResult
from auditcam.integrations.targets import MISSING_EXTRA

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - exercised only without the extra
    raise InputError(MISSING_EXTRA.format(kind="lightning", module="lightning", extra="lightning")) from None


class AuditCallback(Callback):
    """Audit the monitor's subset at the end of every ``every_n_epochs``-th training epoch (and,
    with ``every_n_steps``, every that many optimiser steps); each step's metrics go to the
    monitor's trackers and to ``trainer.loggers``; ``history`` keeps every :class:`StepResult`."""

    def __init__(self, monitor: Monitor, *, every_n_epochs: int = 1, every_n_steps: int | None = None) -> None:
        if every_n_epochs < 0 or (every_n_steps is not None and every_n_steps < 1):
            raise InputError("every_n_epochs must be >= 0 and every_n_steps >= 1")
        self.monitor = monitor
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.history: list[StepResult] = []

    def _audit(self, trainer: Any, pl_module: Any) -> None:
        result = self.monitor.step(pl_module, step=trainer.global_step)
        self.history.append(result)
        metrics = {f"auditcam/{name}": value for name, value in result.metrics.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Audit every ``every_n_steps`` optimiser steps (when set)."""
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._audit(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Audit at the end of every ``every_n_epochs``-th epoch (when not 0)."""
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._audit(trainer, pl_module)
