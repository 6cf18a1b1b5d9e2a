"""The main job, end to end on the embedded default model, with real ROS 2 over loopback DDS:

1. write a synthetic demo bag (a room, coloured objects, some moving, a moving camera) if absent;
2. start the llava4d node in its own process;
3. play the bag into it (rgb, depth, camera_info, /tf, /tf_static, /clock);
4. ask questions through the `~/query` service and print the answers next to the truth
   (`--stream`: through the `~/ask` action, each answer printed as its feedback arrives);
5. write answers.jsonl, tracks.jsonl and tracks.png (top-down, tracks coloured by time).

    llava4d-demo [--out llava4d_demo] [--seed 7] [--rate 1.0] [--model DIR] [--stream]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOPICS = {"rgb/image": "/camera/color/image_raw", "depth/image": "/camera/depth/image_raw",
          "camera_info": "/camera/color/camera_info"}


def keep_dds_local() -> None:
    """Discovery on localhost only, loopback transports (config/fastdds_localhost.xml)."""
    profile = REPO / "config" / "fastdds_localhost.xml"
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        if not profile.exists():
            raise SystemExit(f"llava4d-demo: {profile} not found; set "
                             "FASTDDS_DEFAULT_PROFILES_FILE to a loopback-only Fast DDS profile")
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    os.environ.setdefault("ROS_DOMAIN_ID", str(11 + os.getpid() % 80))
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)


def demo_questions(scene) -> list[tuple[str, str]]:
    """(question, the truth in words) pairs about this scene."""
    qs = [("Which objects move?", ", ".join(o.label for o in scene.objects if o.is_dynamic)
           or "none"),
          ("How many objects are there?", str(len(scene.objects)))]
    for o in scene.objects:
        if o.is_dynamic:
            t = round(min(scene.duration_s - 1.0, (o.start_moving_s or 0.0) + 1.5), 1)
            box = [round(float(v), 2) for v in o.box_at(t)]
            movers = [m.label for m in scene.objects if m.is_moving_at(t)]
            qs += [(f"Where is the {o.label} at {t}s?", f"{box}"),
                   (f"When did the {o.label} start moving?", f"{o.start_moving_s:.1f}s"),
                   (f"What is moving at {t}s?", ", ".join(movers) or "nothing")]
            break
    still = [o for o in scene.objects if not o.is_dynamic]
    if still:
        o = still[0]
        qs += [(f"Where is the {o.label} now?",
                f"{[round(float(v), 2) for v in o.box_at(scene.duration_s)]}"),
               (f"Is the {o.label} still?", "yes")]
    return qs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("llava4d_demo"))
    ap.add_argument("--seed", type=int, default=7, help="synthetic scene seed")
    ap.add_argument("--rate", type=float, default=1.0, help="bag playback rate")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the node")
    ap.add_argument("--model", default="", help="model directory (default: the embedded one)")
    ap.add_argument("--stream", action="store_true",
                    help="ask through the ~/ask action and print answers as they stream")
    args = ap.parse_args(argv)
    keep_dds_local()

    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from llava4d_ros.action import Ask
    from llava4d_ros.data import bagtools
    from llava4d_ros.data.scene import make_scene
    from llava4d_ros.msg import Answer, ObjectTrackArray
    from llava4d_ros.replay import Typewriter, plot_tracks
    from llava4d_ros.ros import convert
    from llava4d_ros.ros.bag_player import play
    from llava4d_ros.srv import Query

    args.out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(args.seed)
    bag = args.out / f"synthetic_seed{args.seed}"
    if not bag.exists():
        print(f"[demo] writing {bag}")
        bagtools.write_scene_bag(bag, scene)
    cmd = [sys.executable, "-m", "llava4d_ros.ros.node", "--ros-args", "-r", "__node:=llava4d",
           "-p", "use_sim_time:=true", "-p", "device:=cpu",
           # the demo's own memory, beside its other outputs (a robot keeps one in ROS_HOME)
           "-p", f"memory_path:={(args.out / 'memory.db').resolve()}"]
    if args.model:  # rcl cannot parse an empty override ("model_path:=")
        cmd += ["-p", f"model_path:={args.model}"]
    for src, dst in TOPICS.items():
        cmd += ["-r", f"{src}:={dst}"]
    print(f"[demo] starting the node (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']})")
    node_log = open(args.out / "node.log", "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT)
    rclpy.init()
    client_node = rclpy.create_node("llava4d_demo")
    seen_tracks: dict[int, dict] = {}  # id -> latest snapshot, also of tracks that ended

    def on_tracks(msg) -> None:
        seen_tracks.update({t["id"]: t for t in convert.track_dicts(msg)})

    client_node.create_subscription(ObjectTrackArray, "/llava4d/tracks", on_tracks, 10)
    client_node.create_subscription(Answer, "/llava4d/answers", lambda m: None, 10)
    clouds: list = []
    client_node.create_subscription(
        PointCloud2, "/llava4d/cloud", clouds.append,
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    query = client_node.create_client(Query, "/llava4d/query")
    ask = ActionClient(client_node, Ask, "/llava4d/ask")

    def wait(future, timeout_s: float) -> bool:
        t_end = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < t_end:
            time.sleep(0.02)
        return future.done()

    def asked(question: str):
        """(success, message, Answer) of `question` through ~/query, or through ~/ask with
        the answer printed as it streams; None on a timeout."""
        if not args.stream:
            future = query.call_async(Query.Request(question=question))
            return (future.result().success, future.result().message,
                    future.result().answer) if wait(future, 60.0) else None
        print(f"Q: {question}")
        typed = Typewriter()
        goal = ask.send_goal_async(Ask.Goal(question=question),
                                   feedback_callback=lambda m: typed(m.feedback.text))
        if not wait(goal, 10.0) or not goal.result().accepted:
            return None
        result = goal.result().get_result_async()
        if not wait(result, 60.0):
            return None
        r = result.result().result
        if r.success:
            typed.finish(r.answer.text)
        return r.success, r.message, r.answer
    executor = SingleThreadedExecutor()
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + args.timeout
        while not (query.service_is_ready() and ask.server_is_ready()):
            if proc.poll() is not None or time.monotonic() > deadline:
                node_log.flush()
                print((args.out / "node.log").read_text()[-3000:], file=sys.stderr)
                print("[demo] the node did not come up (log above)", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("[demo] node active; playing the bag")
        sent = play(bag, rate=args.rate, node=client_node, log=lambda s: print(f"[demo] {s}"))
        time.sleep(1.0)
        print(f"[demo] played {sent} messages; asking questions")
        answers = []
        for question, truth in demo_questions(scene):
            got = asked(question)
            if got is None or not got[0]:
                why = "timeout" if got is None else got[1]
                print(("" if args.stream else f"Q: {question}\n") + f"   refused: {why}")
                continue
            a = convert.answer_dict(got[2])
            answers.append(a)
            said = "" if args.stream else f"Q: {question}\nA: {a['text']}\n"
            print(f"{said}   truth: {truth}   "
                  f"({a['latency_s'] * 1000:.0f} ms, {a['num_visual_tokens']} tokens, "
                  f"tracks {[o['track_id'] for o in a['objects']]})")
        tracks = [seen_tracks[i] for i in sorted(seen_tracks)]
        xyz, dyn = convert.cloud_arrays(clouds[-1]) if clouds else (None, None)
        with open(args.out / "answers.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(a) + "\n" for a in answers)
        with open(args.out / "tracks.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(t) + "\n" for t in tracks)
        plot_tracks(args.out / "tracks.png", tracks, answers,
                    f"demo scene {args.seed}: {len(tracks)} tracks seen\ntruth: "
                    + ", ".join(f"{o.label}{' (moving)' if o.is_dynamic else ''}"
                                for o in scene.objects), xyz, dyn)
        print(f"[demo] {len(tracks)} tracks; wrote {args.out}/answers.jsonl, tracks.jsonl, "
              "tracks.png, node.log")
        return 0 if answers else 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        node_log.close()
        executor.shutdown()
        spinner.join(timeout=5)
        client_node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
