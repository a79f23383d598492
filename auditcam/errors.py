"""Error types shared by every module: the CLI maps them to exit codes."""


class InputError(Exception):
    """Bad input or usage that the user can fix: the CLI prints the message as one line, exit 2."""
