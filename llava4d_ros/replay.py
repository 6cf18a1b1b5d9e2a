"""Offline replay with no ROS install: a rosbag2 file (mcap or sqlite3) through the same Engine the
node runs, then questions to the model.

    llava4d-replay BAG --question "which objects move?" [--questions-file F] [--out DIR]
                       [--stream]

Prints each answer (with --stream, as the model says it), writes `answers.jsonl`,
`tracks.jsonl` (one line per track with its history) and `tracks.png` (a top-down plot of the
tracks coloured by time) into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llava4d_ros.config import NodeConfig
from llava4d_ros.engine import Engine, QueryError, QueryResult
from llava4d_ros.ros import convert

DEFAULT_TOPICS = {
    "rgb": "/camera/color/image_raw",
    "depth": "/camera/depth/image_raw",
    "info": "/camera/color/camera_info",
}


@dataclass
class ReplaySummary:
    messages: int = 0
    frames_matched: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def feed_bag(engine: Engine, bag: Path, topics: dict[str, str] | None = None) -> ReplaySummary:
    """Read every message of `bag` into `engine` in bag order; returns what happened."""
    from rosbags.highlevel import AnyReader

    topics = {**DEFAULT_TOPICS, **(topics or {})}
    kind_of = {v: k for k, v in topics.items()}
    parse = {"rgb": lambda m: (m.header.frame_id.lstrip("/"), convert.image_to_rgb(m)),
             "depth": convert.image_to_depth_m, "info": convert.camera_info_to_camera}
    summary = ReplaySummary()
    t0 = time.perf_counter()
    with AnyReader([bag]) as reader:
        present = {c.topic for c in reader.connections}
        missing = [t for t in topics.values() if t not in present]
        if missing:
            raise ValueError(f"{bag}: topics {missing} not in the bag (it has {sorted(present)})")
        wanted = [c for c in reader.connections
                  if c.topic in kind_of or c.topic in ("/tf", "/tf_static")]
        for conn, _, raw in reader.messages(connections=wanted):
            msg = reader.deserialize(raw, conn.msgtype)
            summary.messages += 1
            if conn.topic in ("/tf", "/tf_static"):
                for parent, child, t_ns, trans, quat in convert.transforms(msg):
                    try:
                        engine.add_transform(parent, child, t_ns, trans, quat,
                                             conn.topic == "/tf_static")
                    except ValueError:  # refused and counted in engine.stats.refused
                        pass
                outcomes = engine.process_pending()
            else:
                kind = kind_of[conn.topic]
                try:
                    item = parse[kind](msg)
                    t_ns = convert.stamp_ns(msg.header.stamp)
                except ValueError as exc:
                    outcomes = [engine.drop(f"bad_{kind}: {exc}")]
                else:
                    outcomes = engine.add_image(kind, t_ns, item)
            for o in outcomes:
                key = o.status if o.status != "dropped" else f"dropped: {o.reason.split(':')[0]}"
                summary.outcomes[key] = summary.outcomes.get(key, 0) + 1
    summary.frames_matched = sum(v for k, v in summary.outcomes.items() if k != "reset")
    summary.seconds = time.perf_counter() - t0
    return summary


class Typewriter:
    """Prints an answer as it is streamed (`Engine.ask(on_text=...)`, `~/ask` feedback): what
    each text adds to the one before, on one line; a text that does not continue the one
    shown (the model took back a sentence it began to repeat) starts a new line, whole."""

    def __init__(self, prefix: str = "A: ", out=None) -> None:
        self.prefix, self.out = prefix, out or sys.stdout
        self.shown: str | None = None

    def __call__(self, text: str) -> None:
        if self.shown is None or not text.startswith(self.shown):
            self.out.write(("" if self.shown is None else "\n") + self.prefix + text)
        else:
            self.out.write(text[len(self.shown):])
        self.shown = text
        self.out.flush()

    def finish(self, text: str) -> None:
        """End the line, showing `text` (the final answer) if the stream did not end with it."""
        if text != self.shown:
            self(text)
        self.out.write("\n")
        self.out.flush()


def result_json(r: QueryResult) -> dict:
    return {
        "question": r.question, "text": r.text, "latency_s": round(r.latency_s, 4),
        "window_start_s": r.window_start_s, "window_end_s": r.window_end_s,
        "num_visual_tokens": r.num_visual_tokens, "model_id": r.model_id,
        "objects": [{"track_id": o.track_id, "label": o.label, "stamp_s": o.stamp_s,
                     "center": [round(float(v), 3) for v in o.center],
                     "size": [round(float(v), 3) for v in o.size],
                     "confidence": round(float(o.confidence), 3)} for o in r.objects],
    }


def track_json(tr) -> dict:
    """A `MapObject` as the JSON the replay writes (the fields of ObjectTrack)."""
    return {"id": tr.object_id, "label": tr.label, "category": tr.category,
            "category_confidence": round(float(tr.category_confidence), 3),
            "colour": tr.colour, "support": tr.support, "is_dynamic": bool(tr.is_dynamic),
            "in_view": bool(tr.in_view),
            "center": [round(float(v), 3) for v in tr.center],
            "size": [round(float(v), 3) for v in tr.size],
            "velocity": [round(float(v), 3) for v in tr.velocity],
            "first_seen_s": tr.first_seen_s, "last_seen_s": tr.last_seen_s,
            "history": [[round(t, 3), *[round(float(v), 3) for v in p]] for t, p in tr.history]}


def plot_tracks(path: Path, tracks: list[dict], answers: list[dict], title: str,
                points_xyz: np.ndarray | None = None, points_dynamic: np.ndarray | None = None
                ) -> None:
    """Top-down view (world x right, y up): window points in gray, every track's history
    coloured by time, the answers' grounded boxes as dashed rectangles.

    `tracks` and `answers` are the JSON forms of `track_json` / `result_json`, so the node's
    messages (the demo) and the offline engine (the replay) draw the same picture.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    if points_xyz is not None and len(points_xyz):
        step = max(1, len(points_xyz) // 20000)
        s = points_xyz[::step]
        ax.scatter(s[:, 0], s[:, 1], s=1, c="0.85", label="window points", rasterized=True)
        if points_dynamic is not None and points_dynamic.any():
            d = points_xyz[points_dynamic]
            ax.scatter(d[:, 0], d[:, 1], s=2, c="0.5", label="dynamic points")
    times = [h[0] for tr in tracks for h in tr["history"]]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    sc = None
    for tr in tracks:
        if not tr["history"]:
            continue
        h = np.array(tr["history"], dtype=np.float64)  # (K, 4): t, x, y, z
        ax.plot(h[:, 1], h[:, 2], "-", c="0.3", lw=0.8)
        sc = ax.scatter(h[:, 1], h[:, 2], c=h[:, 0] - t0, cmap="viridis", vmin=0,
                        vmax=max(t1 - t0, 1e-3), s=14, zorder=3)
        moving = " (moving)" if tr["is_dynamic"] else ""
        ax.annotate(f"#{tr['id']} {tr['label']}{moving}", (h[-1, 1], h[-1, 2]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    for ans in answers:
        for o in ans.get("objects", []):
            (cx, cy, _), (sx, sy, _) = o["center"], o["size"]
            ax.add_patch(Rectangle((cx - sx / 2, cy - sy / 2), sx, sy, fill=False, ls="--",
                                   ec="tab:red"))
            ax.annotate(o["label"], (cx, cy), color="tab:red", fontsize=7)
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="time since first track observation [s]")
    ax.set_xlabel("world x [m]")
    ax.set_ylabel("world y [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Replay a rosbag2 file through llava4d offline.")
    ap.add_argument("bag", type=Path)
    ap.add_argument("--question", "-q", action="append", default=[],
                    help="a question to ask after the bag (repeatable)")
    ap.add_argument("--questions-file", type=Path, help="one question per line")
    ap.add_argument("--out", type=Path, default=Path("replay_out"))
    ap.add_argument("--params", type=Path, help="params YAML (default: config/llava4d.yaml "
                                                "values)")
    ap.add_argument("--model", default=None, help="model directory (default: embedded)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-model", action="store_true", help="tracks only, no questions")
    ap.add_argument("--memory", type=Path, default=None,
                    help="an object memory file (SQLite): the bag's objects are added to it "
                         "and answers reach back into it, so a second bag can ask about the "
                         "first")
    ap.add_argument("--stream", action="store_true",
                    help="print each answer as the model says it")
    for kind, topic in DEFAULT_TOPICS.items():
        ap.add_argument(f"--{kind}-topic", default=topic)
    args = ap.parse_args(argv)

    if not args.bag.exists():
        print(f"llava4d-replay: bag not found: {args.bag}", file=sys.stderr)
        return 2
    questions = list(args.question)
    if args.questions_file:
        questions += [q.strip() for q in args.questions_file.read_text().splitlines()
                      if q.strip() and not q.startswith("#")]
    cfg = NodeConfig.from_yaml(str(args.params)) if args.params else NodeConfig()
    model = None
    if not args.no_model:
        from llava4d_ros.model.runtime import load_model

        model = load_model(args.model, args.device, cfg.dtype, cfg.cpu_threads,
                           cfg.quantization, cfg.decode_mode)
    engine = Engine(cfg, model=model)
    memory = None
    if args.memory is not None:
        from llava4d_ros.memory import MemoryStore

        memory = MemoryStore(args.memory, cfg.memory_retention_s, cfg.memory_max_mb,
                             log=lambda level, text: print(f"memory ({level}): {text}"))
        engine.attach_memory(memory)
    topics = {"rgb": args.rgb_topic, "depth": args.depth_topic, "info": args.info_topic}
    try:
        return _replay(args, engine, topics, questions)
    finally:
        if memory is not None:
            memory.close()  # commits what is queued


def _replay(args: argparse.Namespace, engine: Engine, topics: dict[str, str],
            questions: list[str]) -> int:
    try:
        summary = feed_bag(engine, args.bag, topics)
    except ValueError as exc:
        print(f"llava4d-replay: {exc}", file=sys.stderr)
        return 2
    if engine.memory is not None:
        engine.memory.flush()  # answers read what the bag added
    print(f"replayed {summary.messages} messages in {summary.seconds:.1f} s: "
          + ", ".join(f"{k}={v}" for k, v in sorted(summary.outcomes.items())))
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with open(args.out / "answers.jsonl", "w", encoding="utf-8") as f:
        for q in questions:
            if args.stream:
                print(f"Q: {q}")
            typed = Typewriter() if args.stream else None
            try:
                r = engine.ask(q, on_text=typed)
            except QueryError as exc:  # refused before the model said anything
                print(("" if args.stream else f"Q: {q}\n") + f"   refused: {exc}")
                f.write(json.dumps({"question": q, "error": str(exc)}) + "\n")
                continue
            results.append(r)
            if typed is not None:
                typed.finish(r.text)
                print(f"   ({r.latency_s * 1000:.0f} ms, {r.num_visual_tokens} tokens)")
            else:
                print(f"Q: {q}\nA: {r.text}   ({r.latency_s * 1000:.0f} ms, "
                      f"{r.num_visual_tokens} tokens)")
            for o in r.objects:
                print(f"   -> object {o.track_id} {o.label} at t={o.stamp_s:.2f}s "
                      f"center={np.round(o.center, 2).tolist()}")
            f.write(json.dumps(result_json(r)) + "\n")
    tracks = engine.objects(include_gone=True)
    with open(args.out / "tracks.jsonl", "w", encoding="utf-8") as f:
        for tr in tracks:
            f.write(json.dumps(track_json(tr)) + "\n")
    xyz, dyn = engine.cloud()
    plot_tracks(args.out / "tracks.png", [track_json(t) for t in tracks],
                [result_json(r) for r in results],
                f"{args.bag.name}: {len(tracks)} objects, "
                f"{sum(t.is_dynamic for t in tracks)} moving at the end", xyz, dyn)
    print(f"wrote {args.out}/answers.jsonl, tracks.jsonl, tracks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
