"""The test sets of one ``evaluate`` run: from the command line or from a JSON / YAML file.

A test set is either an HR folder (``data``: the LR images are made with MATLAB bicubic) or
BasicSR-style paired folders (``gt``, ``lq``, and ``filename_tmpl`` giving an LR stem from a GT
stem). On the command line, ``--data`` and ``--gt``/``--lq`` may each be repeated (one
``--filename-tmpl`` for all pairs, or one per pair, in order). ``--sets FILE`` reads a list of
entries ``{name, gt, lq, filename_tmpl}`` or ``{name, data}`` (BasicSR's ``dataroot_gt`` /
``dataroot_lq`` are accepted for ``gt`` / ``lq``, and a BasicSR test option file's ``datasets:``
mapping of entries too, its ``type``, ``phase`` and ``io_backend`` ignored). Relative paths are
relative to the current folder, as on the command line and in BasicSR. A set's name defaults to
the last two components of its folder (``Set5/GTmod12``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import InputFileError, UserError

__all__ = ["TestSet", "sets_from_args", "load_sets", "folder_name"]

_KEYS = {"name", "gt", "lq", "filename_tmpl", "data", "dataroot_gt", "dataroot_lq"}
_IGNORED = {"type", "phase", "io_backend"}  # BasicSR's test-set keys that mean nothing here


@dataclass
class TestSet:
    """One test set: ``data`` (an HR folder) or ``gt`` + ``lq`` (paired folders)."""

    __test__ = False  # not a pytest test class

    name: str
    data: str | None = None
    gt: str | None = None
    lq: str | None = None
    filename_tmpl: str = "{}"

    @property
    def folder(self) -> str:
        """The name as a folder name (for ``--save-dir``): ``/`` and ``\\`` become ``_``."""
        return self.name.replace("/", "_").replace("\\", "_").strip(". ") or "set"


def folder_name(path: str) -> str:
    """The last two components of ``path`` (``datasets/Set5/GTmod12`` → ``Set5/GTmod12``)."""
    parts = [p for p in os.path.normpath(os.path.abspath(path)).split(os.sep) if p]
    return "/".join(parts[-2:]) or path


def _unique(sets: list[TestSet]) -> list[TestSet]:
    """Rename repeated names ``name#2``, ``name#3``, ... (the JSON output is keyed by name)."""
    seen: dict[str, int] = {}
    for s in sets:
        seen[s.name] = seen.get(s.name, 0) + 1
        if seen[s.name] > 1:
            s.name = f"{s.name}#{seen[s.name]}"
    return sets


def sets_from_args(data: list[str] | None, gt: list[str] | None, lq: list[str] | None,
                   templates: list[str] | None) -> list[TestSet]:
    """The sets named by repeated ``--data`` and ``--gt``/``--lq`` options (empty: none given).

    UserError when the ``--gt`` and ``--lq`` counts differ, or there are several ``--filename-tmpl``
    but not one per pair."""
    data, gt, lq, templates = data or [], gt or [], lq or [], templates or []
    if len(gt) != len(lq):
        missing = "--lq" if len(gt) > len(lq) else "--gt"
        raise UserError(f"paired folders need both --gt and --lq, in pairs: got {len(gt)} --gt and "
                        f"{len(lq)} --lq (a {missing} is missing)")
    if len(templates) > 1 and len(templates) != len(gt):
        raise UserError(f"--filename-tmpl given {len(templates)} times for {len(gt)} --gt/--lq pairs: "
                        "give it once (for all pairs) or once per pair")
    if len(templates) <= 1:
        templates = [templates[0] if templates else "{}"] * len(gt)
    sets = [TestSet(folder_name(d), data=d) for d in data]
    sets += [TestSet(folder_name(g), gt=g, lq=q, filename_tmpl=t) for g, q, t in zip(gt, lq, templates)]
    return _unique(sets)


def _read(path: str):
    """The parsed content of a JSON or YAML (``.yaml`` / ``.yml``) file; InputFileError naming it."""
    from .settings import parse_json

    if not os.path.isfile(path):
        raise InputFileError(f"--sets {path}: " + ("is a folder, not a file" if os.path.isdir(path)
                                                   else "file not found"))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"--sets {path}: cannot read it ({exc})") from None
    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UserError(f"--sets {path}: reading YAML needs PyYAML: pip install 'trilevelnas[yaml]' "
                            "(or write the file as JSON)") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputFileError(f"--sets {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        return parse_json(text)
    except ValueError as exc:
        raise InputFileError(f"--sets {path} is not valid JSON ({exc})") from None


def _entry(item, where: str, default_name: str | None) -> TestSet:
    if not isinstance(item, dict):
        raise InputFileError(f"{where}: expected a mapping with gt/lq or data, got {type(item).__name__}")
    unknown = sorted(set(map(str, item)) - _KEYS - _IGNORED)
    if unknown:
        raise InputFileError(f"{where}: unknown key(s) {', '.join(unknown)} (expected name, gt, lq, "
                             "filename_tmpl or data)")
    gt = item.get("gt", item.get("dataroot_gt"))
    lq = item.get("lq", item.get("dataroot_lq"))
    data = item.get("data")
    for key, value in (("gt", gt), ("lq", lq), ("data", data), ("name", item.get("name")),
                       ("filename_tmpl", item.get("filename_tmpl"))):
        if value is not None and not isinstance(value, str):
            raise InputFileError(f"{where}: {key} must be a string, got {value!r}")
    if data is not None and (gt is not None or lq is not None):
        raise InputFileError(f"{where}: give either data (an HR folder) or gt and lq (paired folders), not both")
    if data is None and (gt is None or lq is None):
        raise InputFileError(f"{where}: needs data (an HR folder) or both gt and lq (paired folders)")
    name = item.get("name") or default_name or folder_name(data or gt)
    return TestSet(name, data=data, gt=gt, lq=lq, filename_tmpl=item.get("filename_tmpl") or "{}")


def load_sets(path: str) -> list[TestSet]:
    """The test sets listed in the JSON or YAML file ``path`` (see the module's docstring).

    InputFileError naming the file (and the entry) when it is missing, malformed, empty, or an
    entry lacks its folders or has a key not listed above."""
    content = _read(path)
    if isinstance(content, dict) and isinstance(content.get("datasets"), dict):
        items = list(content["datasets"].items())
    elif isinstance(content, list):
        items = [(None, item) for item in content]
    else:
        raise InputFileError(f"--sets {path}: expected a list of test sets (or BasicSR's datasets: mapping)")
    if not items:
        raise InputFileError(f"--sets {path}: lists no test set")
    sets = [_entry(item, f"--sets {path}, entry {key or i + 1}", key) for i, (key, item) in enumerate(items)]
    names = [s.name for s in sets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputFileError(f"--sets {path}: repeated name(s) {', '.join(repeated)}")
    return sets
