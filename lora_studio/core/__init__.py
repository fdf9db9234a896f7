"""Pure Python + Pillow: config schema, project layout, dataset scan and checks, events. No torch, no Qt."""
