"""benchmarks/search_quality.py's report arithmetic: the residual "at equal cost" against the
random group's line of score on GFLOPs, and the refusal of a target outside the space."""
import dataclasses
import importlib.util
import pathlib

import numpy as np
import pytest

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "search_quality.py"
_spec = importlib.util.spec_from_file_location("search_quality", _BENCH)
search_quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_quality)


def test_equal_cost_residuals_are_offsets_from_the_random_groups_line():
    rng = np.random.default_rng(0)
    slope, intercept = 0.37, 28.1
    g = rng.uniform(2.7, 3.3, 8)
    noise = rng.normal(0, 0.05, 8)
    rows = [{"group": "random", "gflops": float(x), "score": float(intercept + slope * x + e)} for x, e in zip(g, noise)]
    rows += [{"group": "searched", "gflops": 2.9, "score": intercept + slope * 2.9 + 0.1},
             {"group": "searched", "gflops": 3.2, "score": intercept + slope * 3.2 - 0.02}]
    out = search_quality.cost_adjusted(rows)
    fit_slope, fit_intercept = np.polyfit(g, intercept + slope * g + noise, 1)  # independent fit
    assert out["slope_db_per_gflop"] == pytest.approx(fit_slope, abs=1e-9)
    line = lambda x: fit_intercept + fit_slope * x  # noqa: E731
    assert rows[-2]["residual"] == pytest.approx(intercept + slope * 2.9 + 0.1 - line(2.9), abs=1e-9)
    assert out["mean_residual"]["searched"] == pytest.approx(np.mean([r["residual"] for r in rows[-2:]]), abs=1e-12)
    rand_res = [r["score"] - line(r["gflops"]) for r in rows[:8]]
    assert out["random_residual_std"] == pytest.approx(np.std(rand_res, ddof=1), abs=1e-9)
    assert abs(sum(rand_res)) < 1e-9  # least squares: the random residuals sum to zero
    assert search_quality.cost_adjusted(rows[:2] + rows[-2:]) is None  # too few random rows for a line


def test_a_target_outside_the_space_is_refused_before_sampling(capsys):
    from trilevelnas.training import build_config

    with pytest.raises(SystemExit) as exc:
        search_quality.random_within(build_config("smoke"), 1.5, 2, 0)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--gflops 1.5" in err and "0.244-1.04" in err and len(err.strip().splitlines()) == 1


def test_by_budget_reads_the_summary_or_recomputes_it_from_the_checkpoint(tmp_path):
    """A summary's own count is used; a run from before it (no count) gets it recomputed from the
    supernet in its checkpoint, equal to decision_report's; no checkpoint: unknown (None)."""
    import torch

    from trilevelnas.supernet import Supernet, SupernetConfig
    from trilevelnas.supernet.budget import derive_within
    from trilevelnas.supernet.decisions import decision_report

    assert search_quality.by_budget({"decisions": {"by_budget": 3}}, str(tmp_path)) == 3
    assert search_quality.by_budget({"decisions": {}}, str(tmp_path)) is None
    torch.manual_seed(0)
    cfg = SupernetConfig(backbone="B", channels=16, n_rir=2, n_up=1)
    net = Supernet(cfg)
    with torch.no_grad():
        for p in net.arch_parameters().values():
            p.normal_(0, 0.1)
    arch = derive_within(net, 2.5)
    record = dataclasses.asdict(cfg)  # a run checkpoint keeps the config as a plain dict
    torch.save({"supernet": net.state_dict(), "supernet_config": record}, tmp_path / "checkpoint.pt")
    got = search_quality.by_budget({"architecture": arch.to_dict()}, str(tmp_path))
    assert got == decision_report(net, arch)["by_budget"] > 0
