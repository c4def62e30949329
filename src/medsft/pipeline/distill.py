"""Self-distilled general data: the base model answers a source's prompts before training.

Replaying general data in the base model's own words keeps its style and length (the answers it
would give anyway cost it nothing to keep). Answers are generated greedily in batches, appended to
a cache file as each batch finishes (a killed run resumes where it stopped), and keyed by the
model, the template, the generation settings and each record's content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medsft.data.encode import default_cache_dir, tokenizer_fingerprint
from medsft.data.records import Conversation


class Distiller:
    """distiller(source, conversations) -> (answer or None per record, report). Loads the base model on first use."""

    def __init__(self, recipe, tokenizer, template, log=print):
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.template = template
        self.log = log
        self.model = None

    def _identity(self, settings) -> str:
        model = self.recipe.model
        config = Path(model.name_or_path) / "config.json"
        digest = hashlib.sha256()
        for part in (model.name_or_path, config.read_text(encoding="utf-8") if config.is_file() else "",
                     tokenizer_fingerprint(self.tokenizer), model.template, model.system_prompt or "",
                     str(settings.max_new_tokens)):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()[:24]

    def __call__(self, source, conversations: list[Conversation]) -> tuple[list[str | None], dict]:
        from medsft.eval.generate import Chat, Sampling, generate_prompts, prompt_before_answer

        settings = source.self_distill
        folder = Path(self.recipe.data.cache_dir or default_cache_dir()) / "distilled"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self._identity(settings)}.jsonl"
        done: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    done[row["key"]] = row
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: generated again
        system = self.recipe.model.system_prompt
        prompts, keys = {}, [c.content_key for c in conversations]
        for conversation, key in zip(conversations, keys):
            if key in done or key in prompts:
                continue
            prompts[key] = prompt_before_answer(self.template, conversation, system)
        cached = len(conversations) - len(prompts)
        if prompts:
            self.log(f"self-distill {source.name}: the base model answers {len(prompts)} prompts "
                     f"({cached} from the cache {path})")
            if self.model is None:
                self.model = self._load()
            chat = Chat(self.tokenizer, self.template, system)
            order = list(prompts)
            with open(path, "a", encoding="utf-8") as out:
                if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
                    out.write("\n")  # after a line cut by a kill
                def write(indices, answers) -> None:
                    for i, answer in zip(indices, answers):
                        out.write(json.dumps({"key": order[i], "answer": answer.text, "stopped": answer.stopped},
                                             ensure_ascii=False) + "\n")
                        done[order[i]] = {"answer": answer.text, "stopped": answer.stopped}
                    out.flush()

                generate_prompts(self.model, chat, [prompts[k] for k in order], Sampling(settings.max_new_tokens),
                                 settings.batch_size, label=f"self-distill {source.name}", on_batch=write)
        answers = [done[k]["answer"] if done[k]["stopped"] and done[k]["answer"].strip() else None for k in keys]
        return answers, {"cache": str(path), "from_cache": cached}

    def _load(self):
        from medsft.models import load_model

        model = self.recipe.model
        loaded = load_model(model.name_or_path, trust_remote_code=model.trust_remote_code,
                            allow_pickle_weights=model.allow_pickle_weights, vocab_size=len(self.tokenizer),
                            rope_scaling=model.rope_scaling)  # the base as the run trains it
        return loaded.eval()
