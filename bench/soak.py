"""Soak of the real node over loopback DDS (run: `python bench/soak.py`; not a test).

The node runs in its own process, as in bench/node.py (whose publisher this reuses); this
process publishes 640x480 rgb8 + 16UC1 + camera_info + TF at --hz for --duration seconds and asks
a question through `~/query` every --ask-every seconds. It prints, at the end:
frames published / ingested / lost (from the node's /diagnostics), answers ok / failed, the
node's drop and refusal counters, and the node's RSS at start, once the window has filled, and at
the end (growth after the window fills is what a leak would show).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_node", REPO / "bench" / "node.py")
bench_node = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_node)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of streaming")
    ap.add_argument("--hz", type=float, default=15.0, help="frame rate")
    ap.add_argument("--ask-every", type=float, default=5.0, help="seconds between questions")
    ap.add_argument("--window", type=float, default=30.0, help="the node's window_s")
    ap.add_argument("--frames", type=int, default=40, help="distinct frames to cycle through")
    ap.add_argument("--rss-every", type=float, default=60.0, help="seconds between RSS samples")
    ap.add_argument("--model", default="", help="model directory (default: the embedded one)")
    ap.add_argument("--source", choices=("auto", "kitchen", "synthetic"), default="auto",
                    help="frames: the real kitchen (no palette object, so every question is "
                         "answered before the LM runs) or a synthetic scene (the LM answers "
                         "where the red cube is); auto: the kitchen where it is")
    args = ap.parse_args()

    from llava4d_ros.demo import keep_dds_local

    keep_dds_local()
    import rclpy

    frames, k, source = bench_node.load_frames(args.frames, args.source)
    print(f"source: {source}; {args.duration:.0f} s at {args.hz:g} Hz, a question every "
          f"{args.ask_every:g} s, window {args.window:g} s; ROS_DOMAIN_ID="
          f"{os.environ['ROS_DOMAIN_ID']}, cores={os.cpu_count()}", flush=True)
    cmd = [sys.executable, "-m", "llava4d_ros.ros.node", "--ros-args", "-r", "__node:=llava4d",
           "-p", "device:=cpu", "-p", f"window_s:={args.window}"]
    if args.model:
        cmd += ["-p", f"model_path:={args.model}"]
    for src, dst in bench_node.TOPICS.items():
        cmd += ["-r", f"{src}:={dst}"]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llava4d_soak_node_{os.getpid()}.log"
    log = open(log_path, "w")  # noqa: SIM115 - a pipe nobody reads would block the node
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    bench = bench_node.Bench(frames, k)
    rc = 1
    try:
        deadline = time.monotonic() + 120
        while not (bench.query.service_is_ready() and bench.pub.matched()):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"node not ready; its log {log_path}:\n{log_path.read_text()[-3000:]}")
                return 1
            time.sleep(0.1)
        bench.pub.send_static()
        time.sleep(1.0)
        rss = {"start": rss_mib(proc.pid)}
        stop = threading.Event()
        answers = {"ok": 0, "failed": 0}
        failures: list[str] = []
        latencies: list[float] = []

        def asker() -> None:
            # on the synthetic scene all but the count reach the LM (a blue cube is there)
            qs = ["Which objects move?", "How many objects are there?",
                  "Where is the blue cube now?", "Describe the scene."]
            i = 0
            next_t = time.monotonic() + args.ask_every
            while not stop.wait(max(0.0, next_t - time.monotonic())):
                next_t += args.ask_every
                t0 = time.perf_counter()
                future = bench.query.call_async(bench.Query.Request(question=qs[i % len(qs)]))
                while not future.done() and not stop.is_set():
                    time.sleep(0.005)
                if not future.done():
                    break
                latencies.append(time.perf_counter() - t0)
                r = future.result()
                answers["ok" if r.success else "failed"] += 1
                if not r.success:
                    failures.append(r.message)
                i += 1

        series: list[tuple[float, float, int]] = []  # (s since start, RSS MiB, keyframes)

        def sample_rss() -> None:
            t_start = time.monotonic()
            if not stop.wait(args.window + 5.0):
                rss["window full"] = rss_mib(proc.pid)
            while not stop.wait(args.rss_every):
                series.append((time.monotonic() - t_start, rss_mib(proc.pid),
                               bench.counter("buffer_keyframes")))

        threads = [threading.Thread(target=asker), threading.Thread(target=sample_rss)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        published = bench.publish(args.hz, args.duration)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(120)
        time.sleep(3.0)  # the node finishes its queue and publishes /diagnostics
        rss["end"] = rss_mib(proc.pid)
        ingested = bench.counter("ingested")
        lost = published - ingested
        print(f"frames: published={published} ingested={ingested} lost={lost} "
              f"({published / elapsed:.2f} Hz over {elapsed:.0f} s)")
        lat = sorted(latencies)
        p50 = 1000 * lat[len(lat) // 2] if lat else float("nan")
        print(f"answers: ok={answers['ok']} failed={answers['failed']} "
              f"(p50 {p50:.0f} ms, max {1000 * max(lat, default=float('nan')):.0f} ms)")
        if failures:
            print(f"failures (first 3): {failures[:3]}")
        counters = {k: v for k, v in bench.diag.items()
                    if k.startswith(("dropped", "refused", "resets"))}
        print(f"node counters: {counters}")
        print("node RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
        print("RSS MiB over time (s: MiB, keyframes in the buffer): " + ", ".join(
            f"{t:.0f}: {m:.0f} ({kf})" for t, m, kf in series))
        if "window full" in rss:
            print(f"rss_growth_after_window_mib={rss['end'] - rss['window full']:.1f}")
        print(f"frames_lost={lost} answers_failed={answers['failed']}")
        rc = 0 if lost == 0 and answers["failed"] == 0 else 2
        return rc
    finally:
        proc.terminate()
        try:
            node_rc = proc.wait(timeout=30)
            print(f"node exit code after SIGTERM: {node_rc}")
        except subprocess.TimeoutExpired:
            proc.kill()
            print("node did not exit within 30 s of SIGTERM (killed)")
        log.close()
        bench.executor.shutdown()
        bench.spinner.join(timeout=5)
        bench.node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
