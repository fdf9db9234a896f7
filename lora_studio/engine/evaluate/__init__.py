"""What a run's pictures are worth: the style score, the prompt score, and the checkpoint they recommend.

Both scores use only what the artist already has — the base model's own VAE encoder and UNet — and
nothing downloaded. `style` says how far pictures have moved from the base model's look toward the
training set's; `prompts` says whether the base model still reads each picture as its own prompt; the
ranking itself is plain Python in `lora_studio.core.ranking`, so the window can word it.
"""
