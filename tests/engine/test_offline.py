"""Offline by construction: a whole training run (and an export check) never even tries the network."""

from __future__ import annotations

import os
import subprocess
import sys

from engine_fixtures import make_dataset, tiny_config, write_config

# Every attempt to resolve a name or open a connection is recorded and refused, in the engine process.
SITECUSTOMIZE = '''
import os, sys
_log = os.environ["NETWORK_ATTEMPTS_LOG"]
def _hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
        with open(_log, "a") as f:
            f.write(f"{event} {args!r}\\n")
        raise OSError("network access is not allowed in LoRA Studio's engine")
sys.addaudithook(_hook)
'''


def test_a_training_run_never_touches_the_network(tiny_model_dir, tmp_path):
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "attempts.log"
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run", train={"max_steps": 2},
                      sample={"every": 0, "prompts": ["tstyle"], "steps": 2})
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=os.pathsep.join([str(hook_dir), env.get("PYTHONPATH", "")]), NETWORK_ATTEMPTS_LOG=str(log))
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(write_config(cfg, tmp_path / "run.toml"))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "%|" not in done.stderr, done.stderr  # no library progress bars in the app's Log
    assert '"verified": true' in done.stdout
    assert not log.exists(), log.read_text()
