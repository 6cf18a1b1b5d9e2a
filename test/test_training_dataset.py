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


def test_look_split_tokens_leave_fewer_ghosts_and_keep_their_span_through_the_cache(tmp_path):
    """Scene 9's cylinder drives off: with one token per still voxel 15 of its 150 tokens are
    stamped where it no longer is; split by look (issue 31) far fewer are, and the cached
    record keeps each token's first stamp."""
    from llava4d_ros.data.scene import make_scene
    from llava4d_ros.training.ghosts import ghost_fraction, ghosts_of

    counts = {}
    for look in (0.0, 40.0):
        (path,) = cache_scenes([9], str(tmp_path / str(look)), ColourStatsEncoder(),
                               IngestConfig(window_s=8.0, look_change=look), progress=False)
        rec = load_record(path)
        counts[look] = ghosts_of(rec, make_scene(9))
        assert (rec.tokens.t_first_s <= rec.tokens.t_s).all()
        assert ghost_fraction([rec])["ghosts"] == counts[look][0]
    (ghosts0, n0), (ghosts40, n40) = counts[0.0], counts[40.0]
    assert ghosts0 >= 10 and ghosts40 * n0 < 0.5 * ghosts0 * n40  # the share at least halves
