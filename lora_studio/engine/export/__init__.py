"""The LoRA file every Stable Diffusion UI loads: exporting a run's checkpoint (`export`), the kohya format's
names, metadata and hashes (`kohya`), checking a file against a base model's modules the way the loaders do
(`verify`), and `lora-studio inspect`, what any tool's LoRA file holds (`inspect_lora`)."""
