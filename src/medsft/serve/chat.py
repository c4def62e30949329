"""`medsft chat`: talk to the model in a terminal, answers streamed token by token.

Multi-turn with the model's template; `/reset` clears the conversation, `/system TEXT` sets the
system prompt (and starts over), `/quit` or Ctrl-D leaves. With --compare-base the base model
(the same weights with the adapter switched off, no second copy) answers first, then the tuned
one; each keeps its own conversation."""

from __future__ import annotations

import sys
from contextlib import nullcontext

from medsft.data.records import Message
from medsft.errors import UserError
from medsft.eval.generate import Sampling, prompt_for
from medsft.serve.loading import Loaded
from medsft.serve.stream import AnswerStream

HELP = "/reset clears the conversation, /system TEXT sets the system prompt, /quit (or Ctrl-D) leaves"


def chat_loop(loaded: Loaded, sampling: Sampling, compare_base: bool = False, read=input, out=None) -> None:
    out = out or sys.stdout
    if compare_base and not loaded.has_adapter:
        raise UserError("--compare-base needs an adapter (the base is the model with the adapter switched off)")
    sides = [("base", True), ("tuned", False)] if compare_base else [("assistant", False)]
    histories: dict[str, list[Message]] = {name: [] for name, _ in sides}
    system = loaded.chat.system_prompt
    print(f"medsft chat: {loaded.source.base}" + (f" + {loaded.source.adapter}" if loaded.has_adapter else "")
          + f". {HELP}", file=out, flush=True)
    while True:
        try:
            line = read("you> ")
        except EOFError:
            print(file=out)
            break
        command = line.strip()
        if not command:
            continue
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            histories = {name: [] for name in histories}
            print("(conversation cleared)", file=out, flush=True)
            continue
        if command == "/system" or command.startswith("/system "):
            system = command[len("/system"):].strip() or None
            histories = {name: [] for name in histories}
            print(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)", file=out, flush=True)
            continue
        if command.startswith("/"):
            print(f"(unknown command {command.split()[0]}; {HELP})", file=out, flush=True)
            continue
        for name, base_only in sides:
            history = histories[name]
            prompt = prompt_for(loaded.chat.template, line, system, history)
            print(f"{name}> ", end="", file=out, flush=True)
            with loaded.model.disable_adapter() if base_only else nullcontext():
                stream = AnswerStream(loaded.model, loaded.chat, prompt, sampling)
                for piece in stream:
                    print(piece, end="", file=out, flush=True)
            print("" if stream.finish_reason == "stop" else " [cut at --max-new-tokens]", file=out, flush=True)
            history += [Message("user", line), Message("assistant", stream.text)]
