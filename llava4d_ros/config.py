"""The node's settings: one frozen dataclass, declared once as ROS parameters with descriptions.

Defaults live here and are mirrored in config/llava4d.yaml (a test checks the two agree), so the
offline replay, the node and the launch file all start from the same values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import yaml


def _p(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class NodeConfig:
    world_frame: str = _p("map", "Fixed frame the 4D buffer, tracks and answers live in "
                                 "(REP 105: map, or odom).")
    window_s: float = _p(0.0, "Sliding window of visual tokens [s]; older keyframes are "
                              "dropped. 0: the window the model was trained on (its "
                              "ModelSpec; 8 s for the shipped models); the object map and "
                              "the memory keep what is older.")
    max_buffer_mb: float = _p(512.0, "Memory cap of the 4D buffer [MiB]; oldest dropped first.")
    patch_rows: int = _p(0, "Patch grid rows per image. 0: the model's (its ModelSpec); any "
                         "other value must equal it (the weights were trained on that grid).")
    patch_cols: int = _p(0, "Patch grid columns per image. 0: the model's; else must equal it.")
    keyframe_min_interval_s: float = _p(0.1, "Never take keyframes closer than this [s].")
    keyframe_max_interval_s: float = _p(0.5, "Take a keyframe at least this often [s], "
                                             "even with a still camera (objects may move).")
    keyframe_min_translation_m: float = _p(0.05, "Camera motion that triggers a keyframe [m].")
    keyframe_min_rotation_deg: float = _p(5.0, "Camera rotation that triggers a keyframe [deg].")
    voxel_m: float = _p(0.0, "Voxel size for pooling patches into visual tokens [m]. 0: the "
                             "model's (its ModelSpec); any other value must equal it.")
    token_budget: int = _p(0, "Most visual tokens given to the model per question. 0: the "
                              "model's (its ModelSpec); any other value must equal it.")
    sync_slop_s: float = _p(0.02, "Largest stamp difference for rgb/depth/camera_info to match.")
    sync_queue_size: int = _p(30, "Messages kept per stream while waiting for partners.")
    ingest_queue_size: int = _p(30, "Matched frames waiting for their TF or for the ingest "
                                "thread. When full, image callbacks wait for room (up to "
                                "1 s, then the oldest waiting frame is dropped and counted).")
    tf_timeout_s: float = _p(0.25, "How long (in data time) a frame waits for its TF [s].")
    tf_cache_s: float = _p(30.0, "How much TF history is kept [s].")
    time_jump_reset_s: float = _p(1.0, "A stamp this far behind the newest resets the buffer "
                                       "(a bag restarting); smaller steps back are dropped.")
    model_path: str = _p("", "Local model directory (safetensors), or the name of a model "
                             "shipped in the package (default, smollm2). Empty: the embedded "
                             "default.")
    device: str = _p("auto", "auto, cpu, cuda or cuda:N. auto picks cuda when available.")
    dtype: str = _p("float32", "float32, float16 or bfloat16 (the latter two on GPU).")
    quantization: str = _p("none", "none, int8 or int4: the LM's weights quantized at load "
                           "(torchao or bitsandbytes, CUDA only; refused on the CPU).")
    decode_mode: str = _p("eager", "How the LM decodes an answer: eager (a dynamic KV cache), "
                          "static (a static KV cache) or compile (static cache and the decode "
                          "step compiled with CUDA graphs, torch.compile). static and compile "
                          "are for CUDA (refused on the CPU); the first answer after "
                          "activation pays for compiling.")
    cpu_threads: int = _p(1, "torch threads for the model on the CPU; 0: torch's default (one "
                          "per core). The ingest and DDS threads need a core of their own: "
                          "on 2 cores, 2 torch threads made a question 20x slower.")
    max_question_chars: int = _p(500, "Longer questions are refused.")
    query_queue_size: int = _p(4, "Questions that may wait while one is answered; beyond, a "
                               "question gets a 'busy' reply at once (never silence).")
    max_depth_m: float = _p(100.0, "Depth beyond this [m] is refused as invalid: farther than "
                            "any RGB-D sensor measures (Kinect-class ~10 m, stereo ~50 m), "
                            "so it is a corrupt or mis-scaled image, not a far surface.")
    max_new_tokens: int = _p(0, "Longest answer the model may generate [tokens]; 0: the "
                             "model's own (160 for the shipped models); a "
                             "description of 8 objects takes ~105 (word tokens) to ~120 (BPE).")
    cloud_period_s: float = _p(1.0, "Period of ~/cloud (the window's points) [s]; 0 disables.")
    tracks_period_s: float = _p(0.2, "Period of ~/tracks, ~/detections and object markers "
                                      "[s].")
    object_map: bool = _p(True, "Build the object map: objects from depth (static and "
                                "moving) with persistent ids, for ~/tracks, ~/detections, "
                                "markers and answers.")
    gravity: tuple = _p((0.0, 0.0, -1.0), "Direction of gravity in world_frame (any length). "
                        "A REP 103 map has z up: 0 0 -1. Object boxes stand upright against "
                        "it and 'on the table' is read along it.")
    category_views: int = _p(8, "Views of each object classified for its category "
                             "(EfficientNet-Lite0, ImageNet classes folded into nouns); "
                             "0: no categories (objects are named by colour and shape).")
    category_period_s: float = _p(0.5, "At most one category crop batch per this period [s] "
                                       "(each crop costs ~30 ms on a CPU core).")
    memory_path: str = _p("default", "The object memory on disk (SQLite): objects, where they "
                          "were and what happened to them, beyond the window and across "
                          "restarts. 'default': $ROS_HOME/llava4d/memory.db (~/.ros/...); "
                          "'': no memory; else a file path.")
    memory_retention_s: float = _p(604800.0, "History older than this before the newest "
                                             "stamp is deleted [s] (7 days).")
    memory_max_mb: float = _p(500.0, "The memory file is kept under this size [MB]; the "
                                     "oldest history goes first.")

    def __post_init__(self) -> None:
        positive = ("max_buffer_mb", "keyframe_max_interval_s",
                    "sync_slop_s", "tf_timeout_s", "tf_cache_s", "time_jump_reset_s",
                    "tracks_period_s", "max_depth_m")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("sync_queue_size", "ingest_queue_size", "max_question_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("patch_rows", "patch_cols", "token_budget", "voxel_m", "window_s",
                     "max_new_tokens"):  # 0: the model's
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (0: the model's), got "
                                 f"{getattr(self, name)}")
        if self.keyframe_min_interval_s > self.keyframe_max_interval_s:
            raise ValueError("keyframe_min_interval_s must not exceed keyframe_max_interval_s")
        if self.query_queue_size < 0:
            raise ValueError(f"query_queue_size must be >= 0, got {self.query_queue_size}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        gravity = tuple(float(v) for v in self.gravity)
        if len(gravity) != 3 or not all(np.isfinite(gravity)) or not any(gravity):
            raise ValueError(f"gravity must be 3 finite numbers, not all 0, got {self.gravity}")
        object.__setattr__(self, "gravity", gravity)
        if not (self.memory_retention_s > 0 and self.memory_max_mb > 0):
            raise ValueError("memory_retention_s and memory_max_mb must be > 0")
        if self.category_views < 0 or not self.category_period_s > 0:
            raise ValueError("category_views must be >= 0 and category_period_s > 0")
        if self.cloud_period_s < 0:
            raise ValueError("cloud_period_s must be >= 0")
        if not self.world_frame:
            raise ValueError("world_frame must not be empty")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.quantization not in ("none", "int8", "int4"):
            raise ValueError(f"quantization must be none, int8 or int4, got "
                             f"{self.quantization!r}")
        if self.decode_mode not in ("eager", "static", "compile"):
            raise ValueError(f"decode_mode must be eager, static or compile, got "
                             f"{self.decode_mode!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def memory_file(self) -> str:
        """The memory's file path ("" when off): `memory_path` with 'default' resolved."""
        if self.memory_path == "default":
            from llava4d_ros.memory import default_memory_path

            return str(default_memory_path())
        return os.path.expanduser(self.memory_path)

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        return {f.name: f.metadata["description"] for f in fields(cls)}

    @classmethod
    def from_yaml(cls, path: str, node_name: str = "llava4d") -> NodeConfig:
        """Read a ROS 2 params file (`<node>: ros__parameters: {...}`) or a flat mapping."""
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        for key in (node_name, f"/{node_name}", "/**"):
            if key in data and "ros__parameters" in data[key]:
                data = data[key]["ros__parameters"]
                break
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown parameters {sorted(unknown)}")
        return cls(**data)
