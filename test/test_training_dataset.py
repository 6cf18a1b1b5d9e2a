"""Cached scene records with the new data: phrasing families and honest questions get slot
targets like the templates, in a cache directory of their own."""

from __future__ import annotations

import os

from llava4d_ros.core.pipeline import IngestConfig
from llava4d_ros.data.instructions import HONEST_TASKS, TASKS
from llava4d_ros.model.vision import ColourStatsEncoder
from llava4d_ros.training.dataset import TOKEN_FIELDS, cache_scenes, load_record


def test_honest_and_paraphrased_records_are_cached_apart(tmp_path):
    ingest = IngestConfig(token_budget=256)
    kwargs = {"phrasing": "train", "honest": True}
    (path,) = cache_scenes([3], str(tmp_path), ColourStatsEncoder(), ingest, progress=False,
                           scene_kwargs={"n_clutter": 2}, sample_kwargs=kwargs)
    assert os.path.dirname(path) != str(tmp_path)
    assert "phrasing-train" in path and "n_clutter-2" in path
    rec = load_record(path)
    assert {s["task"] for s in rec.samples} == set(TASKS) | set(HONEST_TASKS)
    assert {s["phrasing"] for s in rec.samples} <= {"plain", "imperative", "casual"}
    for s in rec.samples:
        assert len(s["targets"]) == len(s["slots"])
        if s["task"] == "out_of_window":  # the window's ends: tokens stamped nearest them
            assert all(s["targets"]) and s["answer"].startswith("I only see from 0.0s")
    # the plain cache of the same seed is another file, with the template samples only
    (plain,) = cache_scenes([3], str(tmp_path), ColourStatsEncoder(), ingest, progress=False)
    assert plain != path and {s["task"] for s in load_record(plain).samples} == set(TASKS)


def test_scenes_built_by_worker_processes_equal_those_built_in_process(tmp_path):
    import numpy as np

    ingest = IngestConfig(token_budget=256)
    serial = cache_scenes([3, 5], str(tmp_path / "one"), ColourStatsEncoder(), ingest,
                          progress=False)
    pooled = cache_scenes([3, 5], str(tmp_path / "two"), ColourStatsEncoder(), ingest,
                          progress=False, workers=2)
    assert [os.path.basename(p) for p in pooled] == ["scene_000003.npz", "scene_000005.npz"]
    for a, b in zip(serial, pooled):
        ra, rb = load_record(a), load_record(b)
        assert ra.seed == rb.seed and ra.samples == rb.samples
        for name in TOKEN_FIELDS:
            assert np.array_equal(getattr(ra.tokens, name), getattr(rb.tokens, name)), name
