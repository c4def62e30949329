"""`medsft generate`: answers for a file of questions or conversations, written as JSONL.

Rows are written (and flushed) after each batch, so a rerun with the same --out skips the rows
already there and a half-written last line is dropped: a killed run loses at most one batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medsft.data.prepare import write_rejects
from medsft.data.prompts import read_prompts
from medsft.errors import UserError
from medsft.eval.generate import Sampling, generate_prompts, prompt_for
from medsft.serve.loading import Source, load_for_use


def rows_done(out: Path) -> set[int]:
    """Indices of the whole rows in `out`; a partial last line (a crash mid-write) is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(out, "r+b") as handle:
            handle.truncate(len(whole))
    done = set()
    for number, line in enumerate(whole.decode("utf-8").splitlines(), start=1):
        try:
            done.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{out}:{number}: not a row medsft generate wrote; "
                            "pick another --out or remove the file") from None
    return done


def generate_file(source: Source, in_path: str, out_path: str, sampling: Sampling, batch_size: int = 8,
                  on_bad_record: str = "fail", log=print) -> dict:
    """Answer every prompt in `in_path` not yet in `out_path`; returns counts.

    The file is read (and its bad records reported) before the model loads."""
    prompts, rejects = read_prompts(in_path, on_bad_record)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if rejects:
        write_rejects(rejects, out.with_name(out.stem + ".rejects.jsonl"))
        log(f"{len(rejects)} records are not prompts (skipped; see {out.stem}.rejects.jsonl)")
    done = rows_done(out)
    todo = [i for i in range(len(prompts)) if i not in done]
    log(f"{len(prompts)} prompts in {in_path}: {len(done)} already answered in {out}, {len(todo)} to go")
    loaded = load_for_use(source)
    chat = loaded.chat
    texts = [prompt_for(chat.template, prompts[i].question,
                        prompts[i].system if prompts[i].system is not None else chat.system_prompt,
                        list(prompts[i].history)) for i in todo]
    with open(out, "a", encoding="utf-8") as handle:
        def write(batch: list[int], answers) -> None:
            for position, answer in zip(batch, answers):
                prompt = prompts[todo[position]]
                row = {"index": todo[position], "source": str(prompt.provenance), "messages": prompt.messages(),
                       "answer": answer.text, "tokens": answer.tokens, "finished": answer.stopped}
                if prompt.reference is not None:
                    row["reference"] = prompt.reference
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

        generate_prompts(loaded.model, chat, texts, sampling, batch_size, label="generating", on_batch=write)
    _in_file_order(out)
    return {"prompts": len(prompts), "skipped_done": len(done), "answered": len(todo), "rejected": len(rejects)}


def _in_file_order(out: Path) -> None:
    """Rows are written as batches finish (shortest prompts first); once all are there, file order."""
    lines = out.read_text(encoding="utf-8").splitlines()
    lines.sort(key=lambda line: json.loads(line)["index"])
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, out)
