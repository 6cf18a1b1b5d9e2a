"""The object memory on disk: objects, their observations and events beyond the 4D window and
across restarts, in one SQLite file (see docs/MEMORY.md). Pure: no ROS, no torch."""

from llava4d_ros.memory.downsample import DownsamplePolicy
from llava4d_ros.memory.records import (
    MemoryStatus,
    Moved,
    OnSupport,
    StoredObject,
    StoredObservation,
)
from llava4d_ros.memory.store import MemoryStore, default_memory_path

__all__ = ["DownsamplePolicy", "MemoryStatus", "MemoryStore", "Moved", "OnSupport",
           "StoredObject", "StoredObservation", "default_memory_path"]
