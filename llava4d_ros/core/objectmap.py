"""The object map: objects from geometry, fused over keyframes into world-frame objects with
persistent ids, static and moving alike.

Per keyframe (`ObjectMap.update`):

    depth, rgb, pose --surfaces.view_points--> samples in the gravity frame, with normals
      --Levels (floor, table tops), vertical_planes (walls)--> structure taken away
      --radius graph + connected components--> clusters (5 cm mugs up to chairs)
      --voxel overlap with the objects (moving ones shifted by their velocity)--> matches
      --free space (what earlier views saw through)--> moving or not; places seen empty

An object is a set of voxels of `voxel_m` in the gravity frame, grown while it stands still
(the same mug seen from 50 viewpoints is one object with one id) and replaced by each new view
while it moves. It is reported once seen in `min_hits` keyframes on a supporting level (or
moving). A static object stays while out of view; it leaves when its place is seen empty.
"Moving" is read from free space, in both directions: points of a cluster where earlier views
saw through (it came there), or an object's voxels the current view sees through (it left).

Frames: boxes are upright in the gravity-aligned frame `g` (`surfaces.g_from_world`, from the
`gravity` vector in the world frame; REP 103's z-up map needs none); `MapObject` centres are in
the world frame. Units: metres, seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from llava4d_ros.core.colour_words import colour_word
from llava4d_ros.core.geometry import PinholeCamera, invert_se3
from llava4d_ros.core.objects import MapObject, ObjectEvent
from llava4d_ros.core.shape_cues import clings, is_line, is_slab, normal_stats, primitive_shape
from llava4d_ros.core.surfaces import (
    DOWN_REP103,
    Levels,
    ViewPoints,
    g_from_world,
    vertical_planes,
    view_points,
)
from llava4d_ros.core.voxels import HALF_NEIGHBOURS, StructureVoxels, voxel_centres, voxel_keys


@dataclass(frozen=True)
class ObjectMapConfig:
    """Settings of the object map. Sizes [m], times [s]."""

    gravity: tuple[float, float, float] = DOWN_REP103  # direction of gravity, world frame
    samples_across: int = 160  # depth samples per image row (stride = width // this)
    voxel_m: float = 0.03
    cluster_radius_m: float = 0.03  # voxels touching across 3D gaps in the image
    min_points: int = 8
    min_size_m: float = 0.04
    max_width_m: float = 1.6  # wider is structure (a wall, a cabinet run)
    max_height_m: float = 1.9  # a person walking by
    max_still_height_m: float = 1.3  # a taller still thing is a door, a wall corner, a shelf
    max_small_width_m: float = 0.9  # wider on a table, a counter or nothing seen below: a wall
    max_range_m: float = 4.5  # Kinect-class depth noise grows as z^2: farther is not used
    min_hits: int = 3  # keyframes an object is seen in before it is reported
    match_overlap: float = 0.2  # share of a cluster's coarse voxels inside an object's
    free_margin_m: float = 0.05  # + free_margin_frac * depth: a surface seen this far behind
    free_margin_frac: float = 0.03  # Kinect-class depth noise at 4 m is several cm
    moving_share: float = 0.3  # share of a cluster in earlier free space that is motion
    motion_min_points: int = 20  # fewer samples (or voxels seen) are too few to tell motion
    stop_after_s: float = 0.6  # no motion for this long: stopped
    gone_share: float = 0.6  # share of an object's seen voxels seen empty: its place is empty
    gone_keyframes: int = 2
    tentative_s: float = 30.0  # a tentative object unseen this long is dropped ...
    tentative_misses: int = 3  # ... as is one in view this many times with no cluster
    absorbed_keyframes: int = 8  # in view, a surface there, no cluster: it was structure
    n_refs: int = 3  # earlier views that free space is read from
    history_len: int = 64
    require_support: bool = True  # a still object must stand on a level (floor, table...)
    unsupported_hits: int = 6  # ... or be seen this many times
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("voxel_m", "cluster_radius_m", "min_size_m", "max_width_m",
                     "max_height_m", "max_range_m", "free_margin_m", "stop_after_s",
                     "tentative_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("samples_across", "min_points", "min_hits", "gone_keyframes", "n_refs",
                     "history_len", "absorbed_keyframes", "motion_min_points",
                     "tentative_misses", "unsupported_hits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("match_overlap", "moving_share", "gone_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        g_from_world(self.gravity)  # raises for a zero or non-finite vector


@dataclass
class _Cluster:
    p_g: np.ndarray  # (N, 3)
    rgb: np.ndarray  # (N, 3)
    n_g: np.ndarray  # (N, 3)
    moved: float  # share of points where earlier views saw through
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    at_border: bool = False  # it touches the image border: no motion is read from it


@dataclass
class _Object:
    object_id: int
    keys: np.ndarray  # (K,) sorted voxel keys
    hits: np.ndarray  # (K,) int32 keyframes each voxel was seen in
    first_seen_s: float
    last_seen_s: float
    rgb_sum: np.ndarray
    rgb_n: float
    normals: np.ndarray  # (6,) top, side, slant counts, sum cos 4phi, sum sin 4phi, n side
    history: deque
    center_g: np.ndarray
    lo_g: np.ndarray
    hi_g: np.ndarray
    hits_total: int = 1
    confirmed: bool = False
    is_dynamic: bool = False
    last_motion_s: float = -np.inf
    velocity_g: np.ndarray = field(default_factory=lambda: np.zeros(3))
    empty_views: int = 0
    unmatched_views: int = 0
    dormant: bool = False  # remembered from before (a memory on disk), not seen yet this run
    support: str = ""
    support_height: float = float("nan")  # g z of the level below [m]
    support_for: tuple = ()  # the (box, number of levels) `support` was found for
    in_view: bool = True
    was_in_view: bool = True
    category_scores: dict = field(default_factory=dict)  # category -> summed score
    category_views: int = 0
    last_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    motion_votes: deque = field(default_factory=lambda: deque(maxlen=3))


class ObjectMap:
    """Objects from depth, fused over keyframes (see the module docstring). Not thread-safe:
    the Ingestor's caller holds a lock."""

    def __init__(self, cfg: ObjectMapConfig | None = None):
        self.cfg = cfg or ObjectMapConfig()
        self.g_from_w = g_from_world(self.cfg.gravity)
        self.levels = Levels()
        self.structure = StructureVoxels()
        self._objects: list[_Object] = []
        self._next_id = 1
        self._refs: deque = deque(maxlen=self.cfg.n_refs)
        self._rng = np.random.default_rng(self.cfg.seed)
        self.last_view: ViewPoints | None = None
        # reported objects later found to be structure: never an object, so never logged
        self.retracted: set[int] = set()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget objects, levels and views; ids keep counting up (never reused in a run)."""
        self._objects.clear()
        self._refs.clear()
        self.levels.reset()
        self.structure.reset()
        self.last_view = None

    @property
    def next_id(self) -> int:
        return self._next_id

    def continue_ids(self, next_id: int) -> None:
        """Ids from `next_id` on (a memory on disk holds the ones before)."""
        self._next_id = max(self._next_id, int(next_id))

    def seed(self, remembered: Sequence[tuple[int, np.ndarray, np.ndarray, float]]) -> None:
        """Objects remembered from before, `(object_id, center_world (3,), size (3,),
        first_seen_s)` (a memory on disk after a restart). Each waits, unreported, at its
        place: the first cluster there takes its id back (re-identified by place); a place
        seen empty drops it with a `disappeared` event. Ids continue after the largest."""
        step = 2 * self.cfg.voxel_m  # the matching's resolution: finer adds nothing
        for oid, center, size, first_seen_s in remembered:
            c_g = self.g_from_w @ np.asarray(center, np.float64)
            half = np.maximum(np.asarray(size, np.float64) / 2, step / 2)
            axes = [np.arange(c - h, c + h + 1e-9, step) for c, h in zip(c_g, half)]
            cells = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            keys = np.unique(voxel_keys(cells, self.cfg.voxel_m))
            o = _Object(object_id=int(oid), keys=keys, hits=np.ones(keys.size, np.int32),
                        first_seen_s=float(first_seen_s), last_seen_s=float(first_seen_s),
                        rgb_sum=np.zeros(3), rgb_n=0.0, normals=np.zeros(6),
                        history=deque(maxlen=self.cfg.history_len), center_g=c_g,
                        lo_g=c_g - half, hi_g=c_g + half, dormant=True, in_view=False,
                        was_in_view=False)
            self._objects.append(o)
            self._next_id = max(self._next_id, int(oid) + 1)

    @property
    def objects(self) -> list[MapObject]:
        """Reported objects, oldest id first."""
        return [self._snapshot(o) for o in self._objects if o.confirmed]

    @property
    def all_objects(self) -> list[MapObject]:
        """Every object, tentative ones included (for tests and debugging)."""
        return [self._snapshot(o) for o in self._objects]

    def add_category_scores(self, object_id: int, scores: dict[str, float]) -> None:
        """One view's category probabilities for an object (from `core/category.py`); views
        are summed, so a category seen from many angles outweighs one lucky crop."""
        for o in self._objects:
            if o.object_id == object_id:
                for k, v in scores.items():
                    o.category_scores[k] = o.category_scores.get(k, 0.0) + float(v)
                o.category_views += 1
                return

    def category_requests(self, cam: PinholeCamera, world_from_cam: np.ndarray,
                          max_views: int, min_px: int = 24) -> list[tuple[int, tuple]]:
        """Objects in this view that have fewer than `max_views` category views, fewest
        first, with their pixel box `(u0, v0, u1, v1)` (the projected 3D box, inside the
        image and at least `min_px` on a side)."""
        out = []
        cam_from_w = invert_se3(np.asarray(world_from_cam, np.float64))
        for o in sorted(self._objects, key=lambda o: o.category_views):
            if not (o.confirmed and o.in_view and o.category_views < max_views):
                continue
            corners_g = np.array([[x, y, z] for x in (o.lo_g[0], o.hi_g[0])
                                  for y in (o.lo_g[1], o.hi_g[1]) for z in (o.lo_g[2], o.hi_g[2])])
            p_cam = (corners_g @ self.g_from_w) @ cam_from_w[:3, :3].T + cam_from_w[:3, 3]
            if np.any(p_cam[:, 2] < 0.1):
                continue
            u, v, _ = cam.project(p_cam)
            u0, u1, v0, v1 = u.min(), u.max(), v.min(), v.max()
            if u0 < 0 or v0 < 0 or u1 > cam.width - 1 or v1 > cam.height - 1:
                continue  # cut by the image border: a partial view misleads the classifier
            if min(u1 - u0, v1 - v0) < min_px:
                continue
            out.append((o.object_id, (int(u0), int(v0), int(u1), int(v1))))
        return out

    # ------------------------------------------------------------------ update
    def update(self, stamp_s: float, depth_m: np.ndarray, rgb: np.ndarray, cam: PinholeCamera,
               world_from_cam: np.ndarray) -> list[ObjectEvent]:
        """One keyframe: `depth_m (H, W)` metres (NaN invalid), `rgb (H, W, 3)` uint8,
        `world_from_cam (4, 4)`. Returns what happened to objects (appeared, started_moving,
        stopped, left_view, disappeared)."""
        cfg = self.cfg
        stride = max(1, cam.width // cfg.samples_across)
        pts = view_points(depth_m, rgb, cam, world_from_cam, self.g_from_w, stride)
        self.last_view = pts
        up = pts.valid & (pts.n_g[..., 2] > self.levels.up_cos)
        moving = np.zeros(up.shape, bool)
        if up.any() and self._refs:
            moving[up] = self._in_earlier_free_space(pts.p_g[up].astype(np.float64))
        self.levels.update(pts, moving)
        cam_from_w = invert_se3(np.asarray(world_from_cam, np.float64))
        view = (pts.depth_m, stride, cam, cam_from_w)

        clusters = self._clusters(pts)
        events: list[ObjectEvent] = []
        through = self._seen_through(view)
        seen_empty = {oid: float(t.sum() / k.sum()) for oid, (t, k) in through.items()
                      if k.sum() >= 3}
        matches = self._match(clusters, stamp_s, seen_empty)
        matched_ids = set()
        for ci, c in enumerate(clusters):
            o = matches.get(ci)
            if o is None:
                o = self._new_object(c, stamp_s)
                self._objects.append(o)
            else:
                t, k = through.get(o.object_id, (None, np.zeros(0, bool)))
                # it left part of its place: that is motion too (moving away from the camera,
                # its new points lie behind what earlier views saw, not in front)
                left = (k.sum() >= cfg.motion_min_points and not c.at_border
                        and seen_empty[o.object_id] >= cfg.moving_share)
                self._grow(o, c, stamp_s, events, left)
            matched_ids.add(o.object_id)
        self._carve(through, matched_ids)
        self._refresh_states(stamp_s, view, matched_ids, seen_empty, events)
        self._refs.appendleft(view)
        return events

    # ---------------------------------------------------------------- clusters
    def _clusters(self, pts: ViewPoints) -> list[_Cluster]:
        """What is left after structure, as clusters: samples linked when they are image
        neighbours on one continuous surface (no depth jump between them: this follows a
        surface seen at a grazing angle, whose samples lie far apart) or lie within
        `cluster_radius_m` of each other in 3D."""
        cfg = self.cfg
        grid_ok = pts.valid & (pts.depth_m <= cfg.max_range_m)
        p_all = pts.p_g[grid_ok].astype(np.float64)
        n_all = pts.n_g[grid_ok].astype(np.float64)
        if p_all.shape[0] < cfg.min_points:
            return []
        structure = self.levels.on_level(p_all, n_all)
        min_inliers = max(100, int(0.015 * p_all.shape[0]))
        structure |= vertical_planes(p_all, n_all, self._rng, min_inliers)
        # what earlier views found to be structure stays so when this view's plane fit
        # misses it (noisy normals at a distance, a wall seen in part)
        structure |= self.structure.vote(p_all, structure)
        # what a cluster may cling to: this view's structure (an object touches the level it
        # stands on only with its bottom, a small share of its points)
        walls = p_all[structure]
        cand = np.zeros(grid_ok.shape, bool)
        cand[grid_ok] = ~structure
        n_pts = int(cand.sum())
        if n_pts < cfg.min_points:
            return []
        index = np.full(cand.shape, -1, np.int64)
        index[cand] = np.arange(n_pts)
        p = pts.p_g[cand].astype(np.float64)
        n = pts.n_g[cand].astype(np.float64)
        col = pts.rgb[cand]
        rr, cc = np.nonzero(cand)
        h, w = cand.shape
        # depth at the image border is the least sure (lens distortion the intrinsics do not
        # model, flying pixels where the view cuts a surface): no motion is read there
        border = (rr < 8) | (cc < 8) | (rr >= h - 8) | (cc >= w - 8)
        d = pts.depth_m
        rows, cols = [], []
        for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = index[max(0, -di):index.shape[0] - max(0, di),
                      max(0, -dj):index.shape[1] - max(0, dj)]
            b = index[max(0, di):, max(0, dj):index.shape[1] + min(0, dj) or None]
            b = b[:a.shape[0], :a.shape[1]]
            da = d[max(0, -di):d.shape[0] - max(0, di), max(0, -dj):d.shape[1] - max(0, dj)]
            db = d[max(0, di):, max(0, dj):d.shape[1] + min(0, dj) or None][:a.shape[0],
                                                                             :a.shape[1]]
            with np.errstate(invalid="ignore"):
                link = (a >= 0) & (b >= 0) & (np.abs(da - db) <= 0.04 + 0.03 * da)
            rows.append(a[link])
            cols.append(b[link])
        # 3D links through occupied voxels: each sample joins its voxel's node, and voxels
        # touching (26-neighbours) join each other (a radius graph at this density would
        # hold hundreds of thousands of pairs)
        vk = voxel_keys(p, cfg.cluster_radius_m)
        uniq, inv = np.unique(vk, return_inverse=True)
        rows.append(np.arange(n_pts))
        cols.append(n_pts + inv)
        for step in HALF_NEIGHBOURS:
            nk = uniq + step
            j = np.minimum(np.searchsorted(uniq, nk), uniq.size - 1)
            hit = uniq[j] == nk
            rows.append(n_pts + np.flatnonzero(hit))
            cols.append(n_pts + j[hit])
        r, c_ = np.concatenate(rows), np.concatenate(cols)
        n_nodes = n_pts + uniq.size
        graph = coo_matrix((np.ones(r.size), (r, c_)), shape=(n_nodes, n_nodes))
        n_comp, comp = connected_components(graph, directed=False)
        comp = comp[:n_pts]
        moved = self._in_earlier_free_space(p)
        order = np.argsort(comp, kind="stable")
        bounds = np.searchsorted(comp[order], np.arange(n_comp + 1))
        kept, discarded = [], [walls]
        for k in range(n_comp):
            if bounds[k + 1] - bounds[k] < cfg.min_points:
                continue
            m = order[bounds[k]:bounds[k + 1]]
            pc = p[m]
            lo, hi = pc.min(axis=0), pc.max(axis=0)
            ext = hi - lo
            if ext.max() < cfg.min_size_m:
                continue
            too_tall = ext[2] > (cfg.max_height_m if moved[m].mean() >= cfg.moving_share
                                 else cfg.max_still_height_m)
            if (max(ext[0], ext[1]) > cfg.max_width_m or too_tall or is_line(ext)
                    or ext.max() > 0.6 and is_slab(pc) or self._under_level(lo, hi)):
                # structure: walls and cabinet runs the plane finder missed, a piece of wall
                # (thin and large), the legs of a table or the cabinets under a counter
                discarded.append(pc)
                continue
            kept.append(m)
        # what the plane fit and the rules above left of a wall or a cabinet's edge clings
        # to them: most of its points lie within a few cm of that structure
        rest = np.concatenate(discarded) if discarded else np.zeros((0, 3))
        tree = cKDTree(rest[::2]) if len(rest) >= 2 else None
        out = []
        for m in kept:
            pc = p[m]
            if tree is not None and clings(pc, tree):
                continue
            out.append(_Cluster(pc, col[m], n[m],
                                0.0 if border[m].any() else float(moved[m].mean()),
                                np.unique(voxel_keys(pc, cfg.voxel_m)), bool(border[m].any())))
        return out

    def _under_level(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """A cluster whose top reaches just under a structural level, inside its footprint,
        holds the level up."""
        for lv in self.levels.structural():
            if lv.height_m - 0.12 <= hi[2] <= lv.height_m + 0.01 and lo[2] < lv.height_m - 0.2:
                below = self.levels.below(lo[:2], hi[:2], lv.height_m, gap_m=0.01)
                if below is not None and below.level_id == lv.level_id:
                    return True
        return False

    def _in_earlier_free_space(self, p_g: np.ndarray) -> np.ndarray:
        """`(N,)` bool: points that earlier views saw through (in front of their surface)."""
        out = np.zeros(p_g.shape[0], bool)
        if not self._refs:
            return out
        p_w = p_g @ self.g_from_w  # rows: g -> world is the transpose
        for ref in self._refs:
            out |= self._free(p_w, ref) == 1
        return out

    def _free(self, p_w: np.ndarray, view: tuple) -> np.ndarray:
        """`(N,)` int8 of world points against a view: 1 seen through (the view's surface lies
        beyond the point by the margin at every nearby sample), 0 on or behind a surface,
        -1 unknown (outside the image, no depth nearby)."""
        depth, stride, cam, cam_from_w = view
        out = np.full(p_w.shape[0], -1, np.int8)
        p_cam = p_w @ cam_from_w[:3, :3].T + cam_from_w[:3, 3]
        u, v, z = cam.project(p_cam)
        h, w = depth.shape
        with np.errstate(invalid="ignore"):
            ku = np.rint((u - stride // 2) / stride)
            kv = np.rint((v - stride // 2) / stride)
            inside = np.isfinite(ku) & (ku >= 0) & (ku < w) & (kv >= 0) & (kv < h) & (z > 0.1)
        idx = np.flatnonzero(inside)
        if idx.size == 0:
            return out
        ku, kv = ku[idx].astype(np.intp), kv[idx].astype(np.intp)
        padded = np.pad(depth, 1, constant_values=np.nan)
        offs = np.arange(-1, 2)
        seen = padded[kv[:, None, None] + 1 + offs[None, :, None],
                      ku[:, None, None] + 1 + offs[None, None, :]].reshape(idx.size, 9)
        diff = seen - z[idx, None]  # > 0: the surface there lies beyond the point
        margin = (self.cfg.free_margin_m + self.cfg.free_margin_frac * z[idx])[:, None]
        known = np.isfinite(diff)
        with np.errstate(invalid="ignore"):
            through = np.all(~known | (diff > margin), axis=1) & known.any(axis=1)
        res = np.where(known.any(axis=1), 0, -1).astype(np.int8)
        res[through] = 1
        out[idx] = res
        return out

    # ---------------------------------------------------------------- matching
    def _match(self, clusters: list[_Cluster], stamp_s: float,
               seen_empty: dict[int, float]) -> dict[int, _Object]:
        """Cluster index -> object: by overlap of coarse voxels (a moving object's shifted by
        its velocity); a moving cluster left over takes the nearest object whose place was
        just seen empty."""
        cfg = self.cfg
        coarse = 2 * cfg.voxel_m
        out: dict[int, _Object] = {}
        scores = []
        c_keys = [np.unique(voxel_keys(c.p_g, coarse)) for c in clusters]
        c_lo = np.array([c.p_g.min(0) for c in clusters]).reshape(-1, 3)
        c_hi = np.array([c.p_g.max(0) for c in clusters]).reshape(-1, 3)
        for o in self._objects:
            shift = o.velocity_g * (stamp_s - o.last_seen_s) if o.is_dynamic else 0.0
            near = np.flatnonzero(~np.any(c_lo > o.hi_g + shift + 0.15, axis=1)
                                  & ~np.any(c_hi < o.lo_g + shift - 0.15, axis=1))
            if near.size == 0:
                continue
            okeys = np.unique(voxel_keys(voxel_centres(o.keys, cfg.voxel_m) + shift, coarse))
            for ci in near.tolist():
                share = float(np.isin(c_keys[ci], okeys, assume_unique=True).mean())
                if share >= cfg.match_overlap:
                    scores.append((share + (0.5 if o.confirmed else 0.0), ci, o))
        taken_c: set[int] = set()
        for _, ci, o in sorted(scores, key=lambda s: -s[0]):
            if ci in taken_c:
                continue
            # one object may take several clusters (a chair cut in two by its own seat)
            out[ci] = o
            taken_c.add(ci)
        # what overlap missed: a cluster whose points lie next to an unmatched object's
        # surface (a moving object's faces slide out of their old voxels), nearest first
        free_objs = [o for o in self._objects if o not in out.values()]
        pairs = []
        for ci, c in enumerate(clusters):
            if ci in out:
                continue
            tree = cKDTree(c.p_g)
            for o in free_objs:
                dt = max(stamp_s - o.last_seen_s, 0.0)
                reach = 0.12 + float(np.linalg.norm(o.velocity_g)) * dt
                if np.any(c.p_g.min(0) > o.hi_g + reach) or np.any(c.p_g.max(0) < o.lo_g - reach):
                    continue
                d, _ = tree.query(voxel_centres(o.keys, cfg.voxel_m), distance_upper_bound=reach)
                near = float(np.isfinite(d).mean()) if d.size else 0.0
                if near >= 0.3:
                    pairs.append((-near, ci, o))
        for _, ci, o in sorted(pairs, key=lambda p: p[0]):
            if ci not in out and o not in out.values():
                out[ci] = o
        return out

    # ------------------------------------------------------------------ objects
    def _new_object(self, c: _Cluster, stamp_s: float) -> _Object:
        o = _Object(object_id=self._next_id, keys=c.keys,
                    hits=np.ones(c.keys.size, np.int32), first_seen_s=stamp_s,
                    last_seen_s=stamp_s, rgb_sum=c.rgb.sum(axis=0).astype(np.float64),
                    rgb_n=float(len(c.rgb)), normals=normal_stats(c.n_g),
                    history=deque(maxlen=self.cfg.history_len),
                    center_g=np.zeros(3), lo_g=np.zeros(3), hi_g=np.zeros(3))
        self._next_id += 1
        o.last_points = c.p_g
        self._box(o, c)
        o.history.append((stamp_s, o.center_g.copy()))
        return o

    def _grow(self, o: _Object, c: _Cluster, stamp_s: float, events: list,
              left: bool = False) -> None:
        """Add cluster `c` to object `o`; `left`: this view sees through much of where the
        object was."""
        cfg = self.cfg
        # one keyframe's free-space evidence can be depth noise at thin parts (a chair's slats)
        # or RGB-D misregistration; motion is evidence in two of the last three matches
        if o.last_seen_s != stamp_s:
            o.motion_votes.append(len(c.p_g) >= cfg.motion_min_points
                                  and c.moved >= cfg.moving_share or left)
        moving = sum(o.motion_votes) >= 2 and o.motion_votes[-1]
        before = o.center_g.copy()
        if o.dormant:  # remembered, seen again: its id, the place as seen now
            o.dormant, o.confirmed = False, True
            o.keys, o.hits = c.keys, np.ones(c.keys.size, np.int32)
            o.last_seen_s = stamp_s
            events.append(self._event(stamp_s, o, "appeared"))
        elif o.last_seen_s == stamp_s:  # a second cluster of the same object this keyframe
            o.keys = np.union1d(o.keys, c.keys)
            o.hits = np.full(o.keys.size, max(1, int(o.hits.max())), np.int32)
            c = _Cluster(np.concatenate([o.last_points, c.p_g]), c.rgb, c.n_g, c.moved, o.keys)
        elif moving or o.is_dynamic and stamp_s - o.last_motion_s < cfg.stop_after_s:
            # a moving object is where it is now: its old voxels are its past
            o.keys, o.hits = c.keys, np.ones(c.keys.size, np.int32)
        else:
            allk = np.concatenate([o.keys, c.keys])
            allh = np.concatenate([o.hits, np.ones(c.keys.size, np.int32)])
            o.keys, inv = np.unique(allk, return_inverse=True)
            o.hits = np.bincount(inv, weights=allh).astype(np.int32)
        o.last_points = c.p_g
        if moving:
            if not o.is_dynamic and o.confirmed:
                events.append(self._event(stamp_s, o, "started_moving"))
            o.is_dynamic = True
            o.last_motion_s = stamp_s
        o.rgb_sum += c.rgb.sum(axis=0)
        o.rgb_n += len(c.rgb)
        o.normals += normal_stats(c.n_g)
        self._box(o, c if o.is_dynamic else None)
        dt = stamp_s - o.last_seen_s
        if o.is_dynamic and dt > 0:
            v = (o.center_g - before) / dt
            o.velocity_g = v if o.hits_total < 2 else 0.5 * v + 0.5 * o.velocity_g
        if o.last_seen_s != stamp_s:
            o.hits_total += 1
            o.history.append((stamp_s, o.center_g.copy()))
        o.last_seen_s = stamp_s
        o.empty_views = 0

    def _box(self, o: _Object, c: _Cluster | None) -> None:
        """Upright box of the object's voxels (or of cluster `c`'s points while it moves),
        its bottom brought down to the level it stands on (the hidden underside)."""
        cfg = self.cfg
        if c is not None:
            pts = c.p_g
        else:
            keep = o.hits >= max(1, int(0.2 * o.hits.max())) if o.hits.size > 20 else \
                np.ones(o.hits.size, bool)
            pts = voxel_centres(o.keys[keep], cfg.voxel_m)
        if pts.shape[0] >= 20:
            lo, hi = np.percentile(pts, [2, 98], axis=0)
        else:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = 0.5 * cfg.voxel_m
        lo, hi = lo - pad, hi + pad
        seen = (lo.round(2).tobytes(), hi.round(2).tobytes(), len(self.levels.levels))
        if seen != o.support_for:  # the level below changes only when the box or levels do
            lv = self.levels.below(lo[:2], hi[:2], lo[2], gap_m=0.15)
            o.support = self.levels.name(lv) if lv is not None else ""
            o.support_height = lv.height_m if lv is not None else float("nan")
            o.support_for = seen
        if np.isfinite(o.support_height):
            lo[2] = min(lo[2], o.support_height)
        o.lo_g, o.hi_g = lo, hi
        o.center_g = 0.5 * (lo + hi)

    def _seen_through(self, view: tuple) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per object: which of its voxels this view sees through, and which it sees at all
        (two `(K,)` bool arrays); also sets `in_view`."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        objs = [o for o in self._objects if o.keys.size]
        if not objs:
            return out
        centres = voxel_centres(np.concatenate([o.keys for o in objs]), self.cfg.voxel_m)
        states = np.split(self._free(centres @ self.g_from_w, view),
                          np.cumsum([o.keys.size for o in objs])[:-1])  # one projection
        for o, state in zip(objs, states):
            known = state >= 0
            o.in_view = bool(known.sum() >= max(3, 0.2 * o.keys.size))
            out[o.object_id] = (state == 1, known)
        return out

    def _carve(self, through: dict[int, tuple[np.ndarray, np.ndarray]],
               matched: set[int]) -> None:
        """Take away the voxels of still objects that this view saw through (a matched
        moving object was replaced by its new view already)."""
        for o in self._objects:
            t = through.get(o.object_id)
            if t is None or o.is_dynamic and o.object_id in matched:
                continue
            free, known = t
            if o.object_id not in matched and known.sum() >= 3 and (
                    free.sum() >= self.cfg.gone_share * known.sum()):
                continue  # its place is seen empty: kept whole, the evidence that it left
            if free.size == o.keys.size and free.any() and not free.all():
                o.keys, o.hits = o.keys[~free], o.hits[~free]

    def _refresh_states(self, stamp_s: float, view: tuple, matched: set[int],
                        seen_empty: dict[int, float], events: list) -> None:
        cfg = self.cfg
        keep: list[_Object] = []
        for o in self._objects:
            empty = seen_empty.get(o.object_id, 0.0) >= cfg.gone_share
            if o.object_id not in matched and empty:
                o.empty_views += 1
            if o.object_id in matched:
                o.unmatched_views = 0
            elif o.in_view and not empty and not o.is_dynamic and not o.dormant:
                o.unmatched_views += 1
            if o.unmatched_views >= cfg.absorbed_keyframes:
                # its place is seen, with a surface there, yet no cluster has been it for a
                # while: it was a sliver of structure (a cabinet's edge), not an object
                self._retract(o, stamp_s, events)
                continue
            ext = o.hi_g - o.lo_g
            tall = cfg.max_height_m if o.is_dynamic else cfg.max_still_height_m
            wide = cfg.max_width_m if o.support in ("floor", "") and o.is_dynamic or (
                o.support == "floor") else cfg.max_small_width_m
            if max(ext[0], ext[1]) > wide or ext[2] > tall or is_line(ext):
                # grown past any object over views: a wall or a cabinet run seen in pieces
                self._retract(o, stamp_s, events)
                continue
            if o.dormant:
                if o.empty_views >= cfg.gone_keyframes:
                    events.append(self._event(stamp_s, o, "disappeared"))
                    continue
                keep.append(o)
                continue
            if not o.confirmed:
                if o.object_id in matched and self._confirmable(o):
                    o.confirmed = True
                    events.append(self._event(stamp_s, o, "appeared"))
                if (o.unmatched_views >= cfg.tentative_misses or o.empty_views >= 1
                        or stamp_s - o.last_seen_s > cfg.tentative_s):
                    continue  # a tentative object that did not come again: noise
                keep.append(o)
                continue
            if o.empty_views >= cfg.gone_keyframes:
                events.append(self._event(stamp_s, o, "disappeared"))
                continue
            if o.is_dynamic and stamp_s - o.last_motion_s >= cfg.stop_after_s:
                o.is_dynamic = False
                o.velocity_g = np.zeros(3)
                events.append(self._event(stamp_s, o, "stopped"))
            if o.was_in_view and not o.in_view:
                events.append(self._event(stamp_s, o, "left_view"))
            o.was_in_view = o.in_view
            keep.append(o)
        self._objects = keep

    def _retract(self, o: _Object, stamp_s: float, events: list) -> None:
        """Take an object back as structure: its voxels vote structure from now on, and a
        reported one leaves (`disappeared`) and is listed in `retracted`."""
        self.structure.mark(voxel_centres(o.keys, self.cfg.voxel_m))
        if o.confirmed:
            events.append(self._event(stamp_s, o, "disappeared"))
            self.retracted.add(o.object_id)

    def _confirmable(self, o: _Object) -> bool:
        """Seen `min_hits` times, and moving or standing on a level; or, where no level is
        seen below (a black stone counter gives Kinect-class sensors little depth), seen
        `unsupported_hits` times."""
        if o.hits_total < self.cfg.min_hits:
            return False
        return (o.is_dynamic or bool(o.support) or not self.cfg.require_support
                or o.hits_total >= self.cfg.unsupported_hits)

    # ---------------------------------------------------------------- snapshots
    def _event(self, stamp_s: float, o: _Object, kind: str) -> ObjectEvent:
        return ObjectEvent(stamp_s, o.object_id, kind, o.center_g @ self.g_from_w)

    def _snapshot(self, o: _Object) -> MapObject:
        w_from_g = self.g_from_w.T
        category, conf, hyps = _category(o)
        return MapObject(
            object_id=o.object_id, center=w_from_g @ o.center_g, size=o.hi_g - o.lo_g,
            world_from_box=w_from_g.copy(), category=category, category_confidence=conf,
            colour=colour_word(o.rgb_sum / max(o.rgb_n, 1.0)),
            shape=primitive_shape(o.normals, o.hi_g - o.lo_g), support=o.support,
            first_seen_s=o.first_seen_s, last_seen_s=o.last_seen_s, is_dynamic=o.is_dynamic,
            velocity=w_from_g @ o.velocity_g, hypotheses=hyps,
            history=tuple((t, w_from_g @ c) for t, c in o.history), n_views=o.hits_total,
            in_view=o.in_view,
            last_moving_s=o.last_motion_s if np.isfinite(o.last_motion_s) else float("nan"))


#: A category needs this fused score (mean probability over views) to be named; below, the
#: object is "object" and its hypotheses still go out with their scores. Set above the best
#: score any labelled object got for a wrong noun (docs/OBJECTS.md).
CATEGORY_MIN_SCORE = 0.35


def _category(o: _Object) -> tuple[str, float, tuple[tuple[str, float], ...]]:
    if not o.category_views:
        return "object", 0.0, ()
    mean = {k: v / o.category_views for k, v in o.category_scores.items()}
    hyps = tuple(sorted(mean.items(), key=lambda kv: -kv[1])[:5])
    best, score = hyps[0]
    return (best if score >= CATEGORY_MIN_SCORE else "object"), float(score), hyps
