"""The smoke CLIP: a tiny OpenCLIP model with seeded random weights, for tests and offline demos.

No CLIP weights can be downloaded on an offline machine, yet the image path must run for real.
The architecture lives in smoke_clip/open_clip_config.json (the `local-dir:` format of open_clip);
the weights are generated from a fixed seed on first use and cached, then loaded through
open_clip's own `local-dir:` checkpoint loading. Its embeddings carry no meaning.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

SMOKE_MODEL = "embedtab-smoke-clip"
SMOKE_SEED = 20231108
_CONFIG = Path(__file__).parent / "smoke_clip" / "open_clip_config.json"
_WEIGHTS = "open_clip_model.safetensors"


def cache_dir() -> Path:
    root = os.environ.get("EMBEDTAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "embedtab")
    return Path(root)


def smoke_model_dir() -> Path:
    """Directory open_clip loads as `local-dir:`; created on first use (atomically)."""
    config = json.loads(_CONFIG.read_text())
    # A config change gives a new directory, so a stale checkpoint is never loaded.
    from embedtab.fingerprint import hash_value

    target = cache_dir() / f"smoke-clip-{hash_value([config, SMOKE_SEED])[:12]}"
    if (target / _WEIGHTS).is_file():
        return target

    import safetensors.torch
    import torch
    from open_clip import CLIP

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SMOKE_SEED)
        model = CLIP(**config["model_cfg"])
    finally:
        torch.random.set_rng_state(generator_state)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(tmp / _WEIGHTS))
        (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _WEIGHTS).is_file():  # lost a race with another process: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
