"""Training engine: torch, diffusers, transformers, peft, accelerate. Imports core, never Qt."""

import os

# Offline by construction: nothing is ever downloaded at run time. Set before diffusers/transformers load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
# The app's Log shows the engine's stderr line by line: tqdm's "Loading weights: 37%|███▋ |" redraws would
# be dozens of raw lines there. huggingface_hub and transformers read this when they load; diffusers'
# own bars are switched off where a pipeline is made.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import logging

# diffusers' pipeline imports touch transformers' image processors (for safety checkers we never load);
# without torchvision, transformers then advises installing it. We deliberately do not depend on
# torchvision (its wheels pin torch builds), so keep that advice out of the artist's log.
logging.getLogger("transformers.utils.import_utils").setLevel(logging.ERROR)
