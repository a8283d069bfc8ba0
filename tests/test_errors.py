"""The error taxonomy (trilevelnas/errors.py): the library raises the specific subclasses of
UserError, every one of them a ValueError; cli.run_main turns each into one line and exit 2; no
library module imports the command-line module for them."""
import ast
import pathlib

import pytest
import torch

import trilevelnas
from trilevelnas import ops
from trilevelnas.cli import run_main
from trilevelnas.errors import ConfigError, InputFileError, Interrupted, OpArgumentError, UserError
from trilevelnas.fileio import load_torch
from trilevelnas.supernet import SupernetConfig

PACKAGE = pathlib.Path(trilevelnas.__file__).parent
#: Modules that are programs or their argument parsing: they may use cli's helpers.
PROGRAMS = {"cli", "search", "train", "evaluate", "upscale", "export", "ablate", "inference",
            "training/program", "__main__", "commands", "zoo/__main__"}


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


def test_no_library_module_imports_cli():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if name in PROGRAMS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "cli":
                offenders.append(name)
    assert not offenders, f"library modules importing cli: {offenders}"
