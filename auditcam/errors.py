"""Error types shared by every module: the CLI maps them to exit codes."""


class InputError(Exception):
    """Bad input or usage that the user can fix: the CLI prints the message as one line, exit 2."""


class Interrupted(KeyboardInterrupt):
    """The audit stopped on Ctrl-C after saving every finished batch; ``done`` of ``total``
    samples are in the run folder ``folder`` (None: a temporary folder, gone with the run)."""

    def __init__(self, done: int, total: int, folder: object | None) -> None:
        super().__init__(f"interrupted after {done} of {total} samples")
        self.done, self.total, self.folder = done, total, folder
