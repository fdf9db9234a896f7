"""`lora-studio bench` and the memory calibration: our training step against diffusers' LoRA recipe
(`bench`, its two sides and their timing in `sides`, the recipe in `reference`), what is measured besides
time (`measure`), models with seeded random weights (`random_models`), and the shapes-only simulation the
fit estimate was calibrated from (`fit_calibration`)."""
