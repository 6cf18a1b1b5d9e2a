"""Throughput and latency of the real node over loopback DDS (run: `python bench/node.py`).

The node runs in its own process; this process publishes 640x480 rgb8 + 16UC1 + camera_info +
TF (real 7-Scenes frames when ../shared/data is present, synthetic otherwise) at a series of
rates for --duration seconds each, and reads the node's /diagnostics counters to see how many
synchronized frames it ingested. Then, while ingesting at 15 Hz, it asks questions through
`~/query` and reports latency percentiles.

Prints per rate: published, ingested (every synchronized frame the engine took: keyframes
become 4D tokens, the others are skipped by the keyframe policy after validation), keyframes,
dropped, node CPU ms per frame. Last line:
`node_fps=<highest rate held for --duration s with no dropped synchronized frame>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))

KITCHEN = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
TOPICS = {"rgb/image": "/bench/rgb", "depth/image": "/bench/depth", "camera_info": "/bench/info"}
NODE = "/llava4d"


def load_frames(n: int, source: str = "auto"):
    """(rgb (H,W,3) uint8, depth_mm (H,W) uint16, world_from_cam (4,4)) x n, and K (3,3);
    `source` "kitchen" (7-Scenes), "synthetic" (scene 1 rendered at 640x480: palette objects
    that move, so questions reach the LM) or "auto" (the kitchen where it is)."""
    if source == "kitchen" or (source == "auto" and KITCHEN.exists()):
        from llava4d_ros.data.rgbd_folder import RGBDFolder

        folder = RGBDFolder(KITCHEN, stop=n)
        frames = [(f.rgb, f.depth, f.world_from_cam) for f in folder]
        return frames, np.asarray(folder.k), "7scenes-redkitchen (real Kinect, 640x480)"
    from llava4d_ros.data.bagtools import depth_m_to_mm
    from llava4d_ros.data.scene import make_scene, render

    scene = make_scene(1, width=640, height=480)
    frames = []
    for t in scene.frame_times_s[:n]:
        f = render(scene, float(t))
        frames.append((f.rgb, depth_m_to_mm(f.depth_m), f.world_from_cam))
    c = scene.cam
    return frames, np.array([[c.fx, 0, c.cx], [0, c.fy, c.cy], [0, 0, 1]]), "synthetic 640x480"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, frames, k):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from helpers.publish import ScenePublisher, image_msg
        from llava4d_ros.srv import Query

        self.node = rclpy.create_node("llava4d_bench")
        self.pub = ScenePublisher(self.node)
        for attr, topic in (("rgb", "/bench/rgb"), ("depth", "/bench/depth"),
                            ("info", "/bench/info")):
            old = getattr(self.pub, attr)
            new = self.node.create_publisher(old.msg_type, topic, old.qos_profile)
            self.node.destroy_publisher(old)
            setattr(self.pub, attr, new)
        self.k = k
        self.msgs = [(image_msg(rgb, "rgb8", 0), image_msg(depth, "16UC1", 0), w)
                     for rgb, depth, w in frames]
        self.diag: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.query = self.node.create_client(Query, f"{NODE}/query")
        self.Query = Query
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_diag(self, msg) -> None:
        from llava4d_ros.ros import convert

        values = convert.diagnostics_values(msg, NODE)
        if values is not None:
            self.diag = values

    def counter(self, key: str) -> int:
        return int(self.diag.get(key, 0))

    def publish(self, hz: float, duration_s: float, stop: threading.Event | None = None) -> int:
        from helpers.publish import info_msg, tf_msg
        from llava4d_ros.core.geometry import PinholeCamera
        from llava4d_ros.data.bagtools import world_from_link

        h, w = self.msgs[0][0].height, self.msgs[0][0].width
        cam = PinholeCamera(self.k[0, 0], self.k[1, 1], self.k[0, 2], self.k[1, 2], w, h)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration_s and not (stop and stop.is_set()):
            rgb, depth, world_from_cam = self.msgs[n % len(self.msgs)]
            t_ns = time.time_ns()
            for m in (rgb, depth):
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
            self.pub.tf.publish(tf_msg("map", "camera_link", world_from_link(world_from_cam),
                                       t_ns))
            self.pub.info.publish(info_msg(cam, t_ns))
            self.pub.depth.publish(depth)
            self.pub.rgb.publish(rgb)
            n += 1
            time.sleep(max(0.0, start + n / hz - time.monotonic()))
        return n

    def ask(self, question: str) -> tuple[float, bool]:
        t0 = time.perf_counter()
        future = self.query.call_async(self.Query.Request(question=question))
        while not future.done():
            time.sleep(0.002)
        return time.perf_counter() - t0, future.result().success


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="10,15,20,30,40", help="frame rates to try, ascending")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per rate")
    ap.add_argument("--query-duration", type=float, default=20.0)
    ap.add_argument("--frames", type=int, default=40, help="distinct frames to cycle through")
    ap.add_argument("--model", default="", help="model directory (default: the embedded one)")
    args = ap.parse_args()

    from llava4d_ros.demo import keep_dds_local

    keep_dds_local()
    import rclpy

    frames, k, source = load_frames(args.frames)
    print(f"source: {source}, {len(frames)} frames cycled; ROS_DOMAIN_ID="
          f"{os.environ['ROS_DOMAIN_ID']}, cores={os.cpu_count()}")
    cmd = [sys.executable, "-m", "llava4d_ros.ros.node", "--ros-args", "-r", "__node:=llava4d",
           "-p", "device:=cpu", "-p", "cloud_period_s:=0.0", "-p", "window_s:=30.0"]
    if args.model:  # rcl cannot parse an empty override ("model_path:=")
        cmd += ["-p", f"model_path:={args.model}"]
    for src, dst in TOPICS.items():
        cmd += ["-r", f"{src}:={dst}"]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llava4d_bench_node_{os.getpid()}.log"
    log = open(log_path, "w")  # noqa: SIM115 - a pipe nobody reads would block the node
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    bench = Bench(frames, k)
    try:
        deadline = time.monotonic() + 120
        while not (bench.query.service_is_ready() and bench.pub.matched()):
            failed = "staying" in log_path.read_text()  # the node logs why it stays down
            if proc.poll() is not None or time.monotonic() > deadline or failed:
                print(f"node not ready (service {bench.query.service_is_ready()}, "
                      f"subscribed {bench.pub.matched()}); its log {log_path}:")
                print(log_path.read_text()[-3000:])
                return 1
            time.sleep(0.1)
        bench.pub.send_static()
        time.sleep(1.0)
        print(f"{'rate_hz':>8} {'published':>9} {'ingested':>8} {'keyframes':>9} "
              f"{'dropped':>7} {'cpu_ms/frame':>12} {'node_cpu_%':>10}")
        sustained = 0.0
        for rate in [float(r) for r in args.rates.split(",")]:
            while not bench.diag:
                time.sleep(0.1)
            before, c0 = bench.counter("ingested"), cpu_s(proc.pid)
            kf_before = bench.counter("keyframes")
            t0 = time.monotonic()
            sent = bench.publish(rate, args.duration)
            elapsed = time.monotonic() - t0
            time.sleep(2.5)  # let the node finish and publish /diagnostics
            got = bench.counter("ingested") - before
            keyframes = bench.counter("keyframes") - kf_before
            cpu = cpu_s(proc.pid) - c0
            dropped = sent - got
            print(f"{rate:8.1f} {sent:9d} {got:8d} {keyframes:9d} {dropped:7d} "
                  f"{1000 * cpu / max(sent, 1):12.1f} {100 * cpu / elapsed:10.0f}")
            if dropped > 0:
                break
            sustained = rate
        # query latency while ingesting at 15 Hz
        stop = threading.Event()
        feeder = threading.Thread(target=bench.publish, args=(15.0, args.query_duration + 5,
                                                               stop))
        feeder.start()
        time.sleep(3.0)
        latencies, ok = [], 0
        qs = ["Which objects move?", "How many objects are there?",
              "Where is the red cube now?"]
        t_end = time.monotonic() + args.query_duration
        i = 0
        while time.monotonic() < t_end:
            lat, success = bench.ask(qs[i % len(qs)])
            latencies.append(lat)
            ok += success
            i += 1
        stop.set()
        feeder.join()
        lat_ms = 1000 * np.array(latencies)
        print(f"queries while ingesting at 15 Hz: n={len(lat_ms)} ok={ok} "
              f"p50={np.percentile(lat_ms, 50):.0f} ms p95={np.percentile(lat_ms, 95):.0f} ms")
        print(f"dropped by reason (node counters): "
              f"{ {k: v for k, v in bench.diag.items() if k.startswith(('dropped', 'refused'))} }")
        print(f"node_fps={sustained:g}")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        bench.executor.shutdown()
        bench.spinner.join(timeout=5)
        bench.node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
