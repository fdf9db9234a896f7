"""`python -m lora_studio.engine CONFIG.toml [--resume]`: the same as `lora-studio train`.

This is the entry `accelerate launch -m lora_studio.engine CONFIG.toml` runs on several processes.
"""

import sys

from lora_studio.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
