"""InputError: a ValueError that names its parameter; the CLI shows parameters as flags."""

from __future__ import annotations

import pytest

from auditcam.cli import PARAMETER_FLAGS
from auditcam.errors import InputError


def test_an_input_error_is_a_value_error_carrying_its_parameter():
    error = InputError("`batch_size` must be at least 1", "batch_size")
    assert isinstance(error, ValueError) and error.parameter == "batch_size"
    assert InputError("row 3: bad label").parameter is None
    with pytest.raises(ValueError, match=r"^`batch_size` must be at least 1$"):
        raise error


def test_render_shows_each_known_parameter_by_its_flag_and_keeps_the_others():
    error = InputError("`run_dir` out holds a run; pass `resume` or `overwrite`, not `frobnicate`", "run_dir")
    assert error.render(PARAMETER_FLAGS) == "--out out holds a run; pass --resume or --overwrite, not `frobnicate`"
    assert error.render({}) == str(error)
    assert InputError("`methods`: give one").render(PARAMETER_FLAGS) == "--method: give one"  # a table key's flag
