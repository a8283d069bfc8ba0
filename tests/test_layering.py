"""The library never imports the programs: no module of ``trilevelnas`` outside ``trilevelnas/cli/``
imports ``trilevelnas.cli`` or a ``python -m`` shim, and the shims only forward to ``trilevelnas.cli``
(docs/layout.md)."""
import ast
import pathlib

import trilevelnas

PACKAGE = pathlib.Path(trilevelnas.__file__).parent
#: The ``python -m`` entry points outside ``trilevelnas/cli/`` that forward to it.
SHIMS = {"trilevelnas.search", "trilevelnas.train", "trilevelnas.evaluate", "trilevelnas.upscale",
         "trilevelnas.export", "trilevelnas.ablate", "trilevelnas.commands", "trilevelnas.__main__",
         "trilevelnas.zoo.__main__"}


def module_name(path: pathlib.Path) -> str:
    parts = ("trilevelnas",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: pathlib.Path) -> set[str]:
    """Every module name the file imports, anywhere in it: relative imports resolved, and
    ``from X import a`` counted as both ``X`` and ``X.a``."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def is_program(name: str) -> bool:
    return name in SHIMS or name == "trilevelnas.cli" or name.startswith("trilevelnas.cli.")


def library_files() -> list[pathlib.Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not is_program(module_name(p))]


def test_imports_are_resolved_relative_and_absolute():
    assert {"trilevelnas.cli", "trilevelnas.cli.run_main", "trilevelnas.cli.search"} <= imported(PACKAGE / "search.py")
    assert {"trilevelnas.cli", "trilevelnas.cli.zoo"} <= imported(PACKAGE / "zoo" / "__main__.py")
    assert "trilevelnas.errors" in imported(PACKAGE / "zoo" / "cards.py")
    assert "trilevelnas.training.checkpoint" in imported(PACKAGE / "cli" / "program.py")


def test_no_library_module_imports_the_programs():
    files = library_files()
    assert len(files) > 50 and PACKAGE / "memory.py" in files and PACKAGE / "cli" / "search.py" not in files
    offenders = {module_name(p): sorted(filter(is_program, imported(p))) for p in files}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, f"library modules importing trilevelnas.cli or a program shim: {offenders}"


def test_the_shims_only_forward_to_cli():
    for name in sorted(SHIMS):
        path = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
        body = [n for n in ast.parse(path.read_text(encoding="utf-8")).body
                if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]  # the docstring
        assert all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body[:-1]), name
        assert isinstance(body[-1], ast.If) and ast.unparse(body[-1].test) == "__name__ == '__main__'", name
        assert any(n.startswith("trilevelnas.cli.") for n in imported(path)), name
