"""Architecture: JSON round trips, validation errors naming the field, width set, paper presets."""
import json
import math

import pytest

from trilevelnas.arch import (OP_NAMES, PRESET_NAMES, Architecture, ArchitectureError, width_set)
from trilevelnas.errors import UserError


def _cell(channels=64, ops=("conv1x1", "conv3x3", "resblock", "dwsblock", "conv3x3"),
          widths=(24, 32, 40, 56)):
    return [[op, w] for op, w in zip(ops, list(widths) + [channels])]


def _arch_dict(**over):
    d = {"backbone": "A", "path": [0, 1, 0], "cells": [_cell(), _cell()], "channels": 64, "scale": 4}
    d.update(over)
    return d


def test_width_set_paper_value_and_rule():
    assert width_set(64) == [24, 32, 40, 56, 64]
    assert width_set(48) == [16, 24, 32, 40, 48]
    for c in range(8, 129):
        ws = width_set(c)
        assert ws == sorted(set(ws)) and ws[-1] == c and all(1 <= w <= c for w in ws)
        for r in (1 / 3, 1 / 2, 2 / 3, 5 / 6):
            w = 8 * math.floor(r * c / 8 + 0.5)
            w = w + 8 if w < 0.9 * r * c else w
            assert min(w, c) in ws


def test_width_set_rejects_non_positive():
    for bad in (0, -8, 6.0, True):
        with pytest.raises(ArchitectureError, match="channels"):
            width_set(bad)


def test_dict_and_json_round_trip(tmp_path):
    arch = Architecture.from_dict(_arch_dict())
    assert arch.to_dict() == _arch_dict()
    assert Architecture.from_dict(arch.to_dict()) == arch
    path = tmp_path / "arch.json"
    arch.to_json(path)
    assert json.loads(path.read_text()) == _arch_dict()
    assert Architecture.from_json(path) == arch
    assert hash(arch) == hash(Architecture.from_json(path))


def test_defaults_channels_and_scale():
    d = _arch_dict()
    del d["channels"], d["scale"]
    arch = Architecture.from_dict(d)
    assert (arch.channels, arch.scale) == (64, 4)


def test_full_path_completes_backbone_a_ups():
    cells = lambda n: [_cell() for _ in range(n)]  # noqa: E731
    assert Architecture("A", [0, 0], cells(2)).full_path == (0, 0, 1, 1)
    assert Architecture("A", [0, 1, 0], cells(2)).full_path == (0, 1, 0, 1)
    assert Architecture("A", [1, 0, 1], cells(1)).full_path == (1, 0, 1)
    assert Architecture("A", [], [], scale=8).full_path == (1, 1, 1)
    assert Architecture("A", [0], cells(1), scale=2).full_path == (0, 1)
    assert Architecture("B", [0, 0, 1], cells(2)).full_path == (0, 0, 1)
    assert Architecture("B", [0, 0, 1], cells(2)).total_ups == 0


@pytest.mark.parametrize("over, field", [
    ({"backbone": "C"}, "backbone"),
    ({"channels": 0}, "channels"),
    ({"channels": 64.0}, "channels"),
    ({"scale": 3}, "scale"),           # backbone A needs a power of two
    ({"scale": 1}, "scale"),
    ({"path": [0, 2, 0]}, r"path\[1\]"),
    ({"path": "001"}, "path"),
    ({"path": [0, 1, 1, 1, 0]}, "upsampling"),
    ({"path": [0, 0, 0]}, "cells has 2"),
    ({"cells": [_cell(), _cell()[:4]]}, r"cells\[1\]"),
    ({"cells": [_cell(), [["conv5x5", 24]] + _cell()[1:]]}, r"cells\[1\]\[0\] op"),
    ({"cells": [_cell(), [["conv1x1", 0]] + _cell()[1:]]}, r"cells\[1\]\[0\] width"),
    ({"cells": [_cell(), [["conv1x1", 72]] + _cell()[1:]]}, r"cells\[1\]\[0\] width"),
    ({"cells": [_cell(), _cell()[:4] + [["conv1x1", 32]]]}, r"cells\[1\]\[4\] width must equal"),
    ({"cells": [_cell(), _cell()[:4] + [["conv1x1"]]]}, r"cells\[1\]\[4\]"),
    ({"extra": 1}, "extra"),
])
def test_validation_names_the_field(over, field):
    with pytest.raises(ArchitectureError, match=field) as info:
        Architecture.from_dict(_arch_dict(**over))
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_backbone_b_allows_any_integer_scale_and_conv_ones():
    arch = Architecture.from_dict(_arch_dict(backbone="B", path=[1, 0, 1, 1, 0], scale=3))
    assert arch.n_up == 3 and arch.n_rir == 2


def test_missing_field_and_non_object():
    d = _arch_dict()
    del d["cells"]
    with pytest.raises(ArchitectureError, match="cells"):
        Architecture.from_dict(d)
    with pytest.raises(ArchitectureError, match="JSON object"):
        Architecture.from_dict([1, 2])


def test_from_json_errors_name_the_file(tmp_path):
    with pytest.raises(ArchitectureError, match="nope.json"):
        Architecture.from_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchitectureError, match="bad.json.*not valid JSON"):
        Architecture.from_json(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(_arch_dict(backbone="Z")))
    with pytest.raises(ArchitectureError, match="wrong.json.*backbone"):
        Architecture.from_json(wrong)


def test_presets_match_the_paper_tables():
    assert len(PRESET_NAMES) == 4
    paths = {"trilevelnas-a": ("A", (0, 0, 0, 1, 0, 1)), "trilevelnas-b": ("B", (0, 0, 0)),
             "trilevelnas-b-psnr": ("B", (0, 0, 0, 0, 0, 1)), "trilevelnas-b-aim": ("B", (0, 0, 1, 1))}
    for name in PRESET_NAMES:
        arch = Architecture.preset(name)
        assert (arch.backbone, arch.path) == paths[name]
        assert arch.channels == 64 and arch.scale == 4
        for cell in arch.cells:
            assert all(op in OP_NAMES and w in width_set(64) for op, w in cell)
            assert cell[-1][1] == 64
    # spot checks read off the tables (rows are RiR blocks, columns OP1..OP5)
    a = Architecture.preset("trilevelnas-a").cells
    assert a[0] == (("conv1x1", 64), ("conv3x3", 24), ("conv1x1", 24), ("conv1x1", 24), ("conv3x3", 64))
    assert a[1][4] == ("resblock", 64) and a[2][4] == ("dwsblock", 64)
    b = Architecture.preset("trilevelnas-b").cells
    assert b[2] == (("resblock", 64), ("conv1x1", 24), ("conv1x1", 24), ("conv1x1", 24), ("conv1x1", 64))
    aim = Architecture.preset("trilevelnas-b-aim").cells
    assert aim[0] == (("conv1x1", 40), ("conv1x1", 24), ("conv1x1", 56), ("resblock", 56), ("conv1x1", 64))


def test_unknown_preset():
    with pytest.raises(ArchitectureError, match="unknown preset 'agd'"):
        Architecture.preset("agd")


def test_integer_like_scalars_become_plain_ints():
    np = pytest.importorskip("numpy")
    arch = Architecture("B", [np.int64(0), 1], [[("conv1x1", np.int32(24))] * 4 + [("conv3x3", 64)]],
                        channels=np.int64(64))
    d = arch.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(d["path"][0]) is int and type(d["cells"][0][0][1]) is int and type(d["channels"]) is int
