"""LoRA Studio: train image-style LoRAs for Stable Diffusion on your own GPU, offline."""

__version__ = "0.1.0"
