"""Error types shared by every module: the CLI maps them to exit codes.

A library message names the API parameters it is about in backticks (```batch_size```); the CLI
shows each such name as its command-line flag (``--batch-size``) through :meth:`InputError.render`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class InputError(ValueError):
    """Bad input or usage that the user can fix: the CLI prints the message as one line, exit 2.

    ``parameter``: the API parameter (or settings key) the error is about, None when the input is
    not one parameter (a file's content, a sample).
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def render(self, names: Mapping[str, str]) -> str:
        """The message with every backticked parameter shown by its name in ``names`` (e.g. its
        command-line flag); parameters not in ``names`` keep their backticks."""
        return _PARAMETER.sub(lambda m: names.get(m[1], m[0]), str(self))


class Interrupted(KeyboardInterrupt):
    """The audit stopped on Ctrl-C after saving every finished batch; ``done`` of ``total``
    samples are in the run folder ``folder`` (None: a temporary folder, gone with the run)."""

    def __init__(self, done: int, total: int, folder: object | None) -> None:
        super().__init__(f"interrupted after {done} of {total} samples")
        self.done, self.total, self.folder = done, total, folder
