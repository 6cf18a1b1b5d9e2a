"""Training helpers that scale the trainer: data-parallel processes (distributed.py) and LoRA
adapters on the language model (lora.py)."""
