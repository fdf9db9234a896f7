"""Base models: loading a diffusers folder or a single LDM checkpoint file with zero network access (`load`,
`single_file`), the tiny real models tests and the demo train (`tiny`), and the diffusers → LDM single-file
converter (`ldm_convert`, used by the tests to make single-file models)."""
