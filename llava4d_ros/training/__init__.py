"""Training and evaluation of LLaVA-4D: presets, the scene cache, the stages and the trainer;
the metrics, box-confidence calibration, the honesty and object-map suites. The commands
`python -m llava4d_ros.train` and `evaluate` only read flags and call these
(docs/ARCHITECTURE.md)."""
