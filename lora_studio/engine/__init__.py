"""Training engine: torch, diffusers, transformers, peft, accelerate. Imports core, never Qt."""

import os

# Offline by construction: nothing is ever downloaded at run time. Set before diffusers/transformers load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import logging

# diffusers' pipeline imports touch transformers' image processors (for safety checkers we never load);
# without torchvision, transformers then advises installing it. We deliberately do not depend on
# torchvision (its wheels pin torch builds), so keep that advice out of the artist's log.
logging.getLogger("transformers.utils.import_utils").setLevel(logging.ERROR)
