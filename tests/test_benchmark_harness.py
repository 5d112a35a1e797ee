"""The benchmark harness's reading of a run's manifest (the benchmarks themselves are commands)."""

from __future__ import annotations

from benchmarks.harness import group_manifest_stages


def test_stages_that_ran_beside_another_are_not_counted_twice() -> None:
    timings = {
        "read_and_aggregate": 10.0, "write_features": 1.0, "k_sweep": 20.0,
        "fit_scores_and_tiers": 5.0, "fit_final_model": 3.0, "write_profiles": 2.0,
        "total": 40.0,
    }
    assert group_manifest_stages(timings) == {
        "features": 11.0, "k_sweep": 20.0, "final_fit_and_writes": 10.0,
    }
    assert group_manifest_stages(timings, {"fit_scores_and_tiers": "k_sweep"}) == {
        "features": 11.0, "k_sweep": 20.0, "final_fit_and_writes": 5.0,
    }
