"""Experiment trackers and training loops: log audits to MLflow and TensorBoard
(``--log``), and :class:`~auditcam.integrations.monitor.Monitor`, a fixed audit subset
checked at every step of a training loop (with a Lightning callback).

Each tracker is an optional extra (``auditcam[mlflow]``, ``auditcam[tensorboard]``,
``auditcam[lightning]``), imported only when used.
"""

from auditcam.integrations.monitor import Monitor

__all__ = ["Monitor"]
