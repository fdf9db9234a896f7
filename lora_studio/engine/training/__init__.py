"""Training: the run loop (`loop`: dataset → models → cache → steps with samples and checkpoints → export),
the step (`step`: one LoRA training step and the state it needs), and what they use: the batch plan and
encodings (`data`), the on-disk cache of latents and text-encoder outputs (`cache`), resumable checkpoints
(`checkpoint`), the LoRA adapter (`lora`), text conditioning (`conditioning`), samples during training
(`sampling`) and fp8 storage of the frozen base weights (`fp8`)."""
