"""The error taxonomy (trilevelnas/errors.py): the library raises the specific subclasses of
UserError, every one of them a ValueError; cli.run_main turns each into one line and exit 2 (that no
library module imports trilevelnas.cli for them: tests/test_layering.py)."""
import pytest
import torch

from trilevelnas import ops
from trilevelnas.cli import run_main
from trilevelnas.errors import ConfigError, InputFileError, Interrupted, OpArgumentError, UserError
from trilevelnas.fileio import load_torch
from trilevelnas.supernet import SupernetConfig


def test_every_user_error_is_a_value_error():
    for cls in (UserError, ConfigError, InputFileError, OpArgumentError):
        assert issubclass(cls, ValueError) and issubclass(cls, UserError)
    assert not issubclass(Interrupted, UserError)


def raises_setting():
    SupernetConfig(channels=7)


def raises_file(tmp_path):
    load_torch(str(tmp_path / "missing.pt"), "checkpoint")


def raises_op():
    ops.sparsestmax(torch.zeros(3), 0.5, dim=4)


def test_the_library_raises_the_specific_subclass(tmp_path):
    with pytest.raises(ConfigError, match="channels = 7"):
        raises_setting()
    with pytest.raises(InputFileError, match="missing.pt"):
        raises_file(tmp_path)
    with pytest.raises(OpArgumentError, match="sparsestmax"):
        raises_op()


@pytest.mark.parametrize("kind", ["setting", "file", "op"])
def test_run_main_prints_each_as_one_line_and_exits_2(kind, tmp_path, capsys):
    fail = {"setting": raises_setting, "file": lambda: raises_file(tmp_path), "op": raises_op}[kind]
    assert run_main("prog", lambda argv: fail(), []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error: ")
