"""Chat templates: a conversation becomes exchanges of (prompt, answer, separator) text.

The prompt and separator are never supervised; the answer is the assistant's text followed by
its end-of-turn token, and is what the model learns to produce. Keeping the three apart as text
(and tokenizing them apart) makes the assistant-only labels exact by construction: no offsets
to recover, no token to guess at the seams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from medsft.data.records import Conversation, split_calls
from medsft.errors import UserError


@dataclass(frozen=True)
class Exchange:
    prompt: str  # everything before the answer: system, earlier context, the user turn, the assistant header
    answer: str  # the assistant text plus its end-of-turn token (supervised)
    separator: str = ""  # text after the end token and before the next prompt (not supervised)


@dataclass(frozen=True)
class Template:
    """A chat format as text patterns. `{content}` is the message; `{bos}`/`{eos}` the tokenizer's."""

    name: str
    user: str  # a user turn followed by the assistant header
    end: str  # end-of-turn token(s) the model must learn to emit after an answer
    separator: str = ""
    system: str = "{content}"
    default_system: str = ""
    prefix: str = ""  # once at the very start (after nothing)
    observation: str | None = None  # a tool result turn; default: like a user turn
    system_in_first_user: bool = False  # templates with no system slot fold it into the first user turn
    tools: str = "{content}"  # the tool schema as the family shows it, after the system prompt
    tool_list: str = ""  # how the schema's tools are listed: as given, "lines" (one JSON each: Hermes), "glm"
    tool_call: str = "{content}"  # a function_call answer as the family writes it (supervised)
    call_arguments: str = "arguments"  # the key the family's call JSON names the arguments with
    call_format: str = "json"  # "glm": a call is its name, a newline, then the arguments' JSON
    answer_prefix: str = ""  # supervised text before every answer (GLM's newline after <|assistant|>)
    # GLM: no end token; an answer ends with the opener of the turn after it (<|user|> or <|observation|>,
    # both stop tokens of the family), which the next prompt then does not repeat. (user, observation).
    openers: tuple[str, str] | None = None
    think: bool = False  # reasoning families: the final answer's reasoning in <think>...</think> before it
    empty_think: bool = False  # Qwen3: the final answer has a think block even with no reasoning
    thinking: bool = True  # model.enable_thinking: an empty think block is answered (True) or given (False)

    def resolve(self, bos: str, eos: str, thinking: bool = True) -> Template:
        """The same template with {bos} and {eos} replaced by the tokenizer's strings."""
        fields = {}
        for key, value in self.__dict__.items():
            if isinstance(value, str) and key != "name":
                value = value.replace("{bos}", bos).replace("{eos}", eos)
            fields[key] = value
        return Template(**{**fields, "thinking": thinking})

    def render(self, conversation: Conversation, system_prompt: str | None = None) -> list[Exchange]:
        system = conversation.system if conversation.system is not None else system_prompt
        if system is None:
            system = self.default_system
        if conversation.tools:
            listing = {"lines": _tool_lines, "glm": _glm_tools}.get(self.tool_list, str)
            schema = self.tools.replace("{content}", listing(conversation.tools))
            system = f"{system}\n\n{schema}" if system else schema
        head = self.prefix
        if system and not self.system_in_first_user:
            head += self.system.replace("{content}", system)

        exchanges: list[Exchange] = []
        pending = head
        messages = conversation.messages
        last = len(messages) - 2
        for i in range(0, len(messages), 2):
            asked, answered = messages[i], messages[i + 1]
            content = asked.content
            if i == 0 and system and self.system_in_first_user:
                content = self.system.replace("{content}", system) + content
            observation = asked.role == "observation"
            if self.openers and i == 0:  # later turns' openers end the answer before them
                pending += self.openers[1 if observation else 0]
            pattern = self.observation if observation and self.observation else self.user
            pending += pattern.replace("{content}", content)
            answer = answered.content
            if answered.role == "function_call":
                answer = self._calls(answer)
            elif self.think:  # earlier answers are shown without their reasoning, as the family's template does
                reasoning, answer = split_reasoning(answer)
                block = f"<think>\n{reasoning}\n</think>\n\n"
                if i == last and (reasoning or (self.empty_think and self.thinking)):
                    answer = block + answer
                elif i == last and self.empty_think:  # enable_thinking off: the empty block is given, as at inference
                    pending += block
            end = self.end
            if self.openers:
                follows_observation = i + 2 < len(messages) and messages[i + 2].role == "observation"
                end = self.openers[1 if follows_observation else 0]
            exchanges.append(Exchange(prompt=pending, answer=self.answer_prefix + answer + end,
                                      separator=self.separator))
            pending = ""
        return exchanges

    @property
    def turn_dependent(self) -> bool:
        """Whether a turn renders differently once later turns follow (reasoning shown only in the final
        answer; GLM's answer ending with the next turn's marker): such a family's own chat template cannot
        be split into turns, and no single Jinja text written per message renders it."""
        return self.think or self.openers is not None

    def _calls(self, content: str) -> str:
        """A function_call turn as the family writes it: any text before the calls, then each call in its own
        block, one per line (as Qwen2.5's template writes several <tool_call> blocks); content that is
        not call JSON is written inside one block as it is."""
        parsed = split_calls(content)
        if parsed is None:
            return self.tool_call.replace("{content}", content)
        text, calls = parsed
        blocks = [self.tool_call.replace("{content}", self._call(name, arguments)) for name, arguments in calls]
        return "\n".join(([text] if text.strip() else []) + blocks)

    def _call(self, name: object, arguments: object) -> str:
        if self.call_format == "glm":
            return f"{name}\n{json.dumps(arguments, ensure_ascii=False)}"
        return json.dumps({"name": name, self.call_arguments: arguments}, ensure_ascii=False)


def split_reasoning(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant text that may open with <think>...</think> (R1 / Qwen3 data);
    ("", content) when it has none."""
    if "</think>" not in content:
        return "", content
    thought, _, answer = content.partition("</think>")
    return thought.split("<think>", 1)[-1].strip("\n"), answer.lstrip("\n")


def _tool_lines(tools: str) -> str:
    """A JSON list of tools as one JSON object per line (Hermes / Qwen); other text as it is."""
    try:
        parsed = json.loads(tools)
    except ValueError:
        return tools
    items = parsed if isinstance(parsed, list) else [parsed]
    return "\n".join(json.dumps(item if "function" in item else {"type": "function", "function": item},
                                ensure_ascii=False) if isinstance(item, dict) else json.dumps(item, ensure_ascii=False)
                     for item in items)


def _glm_tools(tools: str) -> str:
    """GLM-4's tool list: each function under `## name`, its schema as indented JSON, then the
    instruction to call it with JSON arguments."""
    try:
        parsed = json.loads(tools)
    except ValueError:
        return "\n\n" + tools
    items = parsed if isinstance(parsed, list) else [parsed]
    text = ""
    for item in items:
        function = item.get("function", item) if isinstance(item, dict) else {"name": str(item)}
        text += (f"\n\n## {function.get('name', '')}\n\n{json.dumps(function, ensure_ascii=False, indent=4)}"
                 "\n在调用上述函数时，请使用 Json 格式表示调用的参数。")
    return text


# Hermes-style tool use, as Qwen2.5's chat template writes it: the schema in the system prompt within
# <tools></tools>, each call within <tool_call></tool_call>, each result as a user turn within
# <tool_response></tool_response>.
HERMES_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{content}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>"
)

_CHATML = Template(
    name="chatml",
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
    observation="<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    end="<|im_end|>",
    separator="\n",
    tools=HERMES_TOOLS,
    tool_list="lines",
    tool_call="<tool_call>\n{content}\n</tool_call>",
)

# GLM-4's tool prompt: each function under its own heading, as the family's template lists them.
GLM_TOOLS = "# 可用工具{content}"

_LLAMA2 = Template(
    name="llama2",
    user="{bos}[INST] {content} [/INST]",
    system="<<SYS>>\n{content}\n<</SYS>>\n\n",
    system_in_first_user=True,
    end="{eos}",
)

_GLM4 = Template(name="glm4", prefix="[gMASK]<sop>", system="<|system|>\n{content}", user="\n{content}<|assistant|>",
                 end="", answer_prefix="\n", openers=("<|user|>", "<|observation|>"), tools=GLM_TOOLS, tool_list="glm",
                 call_format="glm")

BUILTIN: dict[str, Template] = {
    "chatml": _CHATML,
    "qwen": Template(**{**_CHATML.__dict__, "name": "qwen", "default_system": "You are a helpful assistant."}),
    # Qwen3: ChatML; the final answer opens with a think block (empty when the data has no reasoning),
    # earlier answers are shown without theirs (model.enable_thinking: see the README).
    "qwen3": Template(**{**_CHATML.__dict__, "name": "qwen3", "think": True, "empty_think": True}),
    # DeepSeek-V3 / R1: BOS, the system text, then <｜User｜>...<｜Assistant｜>...<｜end▁of▁sentence｜>;
    # R1-style reasoning as <think>...</think> before the final answer.
    "deepseek3": Template(name="deepseek3", prefix="{bos}", system="{content}",
                          user="<｜User｜>{content}<｜Assistant｜>", end="{eos}", think=True),
    # GLM-4 (and ChatGLM3, whose tokenizer holds the same markers): [gMASK]<sop>, role markers with no end
    # token: an answer ends with the next turn's marker (<|user|> / <|observation|>, the family's stop tokens).
    "glm4": _GLM4,
    "chatglm3": Template(**{**_GLM4.__dict__, "name": "chatglm3", "prefix": "[gMASK]sop"}),
    # InternLM2: ChatML after BOS.
    "intern2": Template(**{**_CHATML.__dict__, "name": "intern2", "prefix": "{bos}"}),
    "yi": Template(**{**_CHATML.__dict__, "name": "yi"}),
    # Gemma: no system turn (its text opens the first user turn), the assistant is `model`.
    "gemma": Template(name="gemma", prefix="{bos}", system="{content}\n\n", system_in_first_user=True,
                      user="<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n",
                      end="<end_of_turn>", separator="\n"),
    "phi3": Template(name="phi3", system="<|system|>\n{content}<|end|>\n",
                     user="<|user|>\n{content}<|end|>\n<|assistant|>\n", end="<|end|>", separator="\n"),
    # Chinese-LLaMA-2 / Alpaca-2: Llama 2's format with a bilingual default system prompt.
    "llama2-zh": Template(**{**_LLAMA2.__dict__, "name": "llama2-zh",
                             "default_system": "You are a helpful assistant. 你是一个乐于助人的助手。"}),
    # Baichuan and Baichuan2 mark turns with reserved tokens (user 195/196 ids in their vocabularies).
    "baichuan": Template(name="baichuan", user="<reserved_102>{content}<reserved_103>", end="{eos}"),
    "baichuan2": Template(name="baichuan2", user="<reserved_106>{content}<reserved_107>", end="{eos}"),
    "llama2": _LLAMA2,
    "llama3": Template(
        name="llama3",
        prefix="{bos}",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        observation="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        end="<|eot_id|>",
        # Llama 3.1's custom tool calling: a call is a bare JSON object with "parameters".
        tools="Given the following functions, please respond with a JSON for a function call with its proper "
        "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, "
        "\"parameters\": dictionary of argument name and its value}. Do not use variables.\n\n{content}",
        tool_list="lines",
        call_arguments="parameters",
    ),
    "mistral": Template(
        name="mistral",
        prefix="{bos}",
        user="[INST] {content} [/INST]",
        system="{content}\n\n",
        system_in_first_user=True,
        end="{eos}",
    ),
    "vicuna": Template(
        name="vicuna",
        default_system="A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        system="{content} ",
        user="USER: {content} ASSISTANT: ",
        end="{eos}",
    ),
    "alpaca": Template(
        name="alpaca",
        default_system="Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.",
        system="{content}\n\n",
        user="### Instruction:\n{content}\n\n### Response:\n",
        end="{eos}",
        separator="\n\n",
    ),
}
# llama2 folds the system block into the first user turn, inside [INST]:
# "<s>[INST] <<SYS>>\n...\n<</SYS>>\n\nquestion [/INST]".


def _tool_schemas(tools: str | None) -> list | None:
    """The record's tool schema for apply_chat_template(tools=...): a JSON list (or one object)."""
    if not tools:
        return None
    try:
        parsed = json.loads(tools)
    except ValueError:
        raise UserError("model.template: tokenizer: a record's tools are not JSON, which the tokenizer's template "
                        "needs; pick a built-in template") from None
    return parsed if isinstance(parsed, list) else [parsed]


def _tool_call_message(call: str) -> dict:
    """A function_call turn as the assistant message with tool_calls that chat templates expect."""
    parsed = split_calls(call)
    if parsed is None:
        raise UserError("model.template: tokenizer: a function_call turn is not a JSON object with a name; "
                        "pick a built-in template")
    text, calls = parsed
    return {"role": "assistant", "content": text,
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}
                           for name, arguments in calls]}


class TokenizerTemplate:
    """The tokenizer's own Jinja chat template, split into exchanges by rendering prefixes.

    For each answer we render the chat up to the question with the generation prompt and the chat
    up to the answer; the difference is the answer block. This needs a template that does not
    rewrite earlier turns, which we check instead of assuming.
    """

    name = "tokenizer"

    def __init__(self, tokenizer, field: str = "model.template"):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(
                f"{field}: `tokenizer` was asked for, but this tokenizer has no chat template; "
                f"pick a built-in one ({', '.join(BUILTIN)})"
            )
        self.tokenizer = tokenizer
        self.end = ""

    def _text(self, messages: list[dict], generation_prompt: bool, tools: list | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    def render(self, conversation: Conversation, system_prompt: str | None = None) -> list[Exchange]:
        system = conversation.system if conversation.system is not None else system_prompt
        chat: list[dict] = [{"role": "system", "content": system}] if system is not None else []
        exchanges: list[Exchange] = []
        done = ""  # text already assigned to earlier exchanges
        messages = conversation.messages
        tools = _tool_schemas(conversation.tools)  # the template's own tool format, through tools=
        for i in range(0, len(messages), 2):
            asked, answered = messages[i], messages[i + 1]
            chat.append({"role": "tool" if asked.role == "observation" else "user", "content": asked.content})
            before = self._text(chat, generation_prompt=True, tools=tools)
            call = _tool_call_message(answered.content) if answered.role == "function_call" else None
            chat.append(call or {"role": "assistant", "content": answered.content})
            after = self._text(chat, generation_prompt=False, tools=tools)
            if not before.startswith(done) or not after.startswith(before):
                raise UserError(
                    "model.template: the tokenizer's chat template rewrites earlier turns, so answers "
                    f"cannot be located; pick a built-in template ({', '.join(BUILTIN)})"
                )
            block = after[len(before):]
            if call:  # the template writes the call its own way: all of the block up to its end is the answer
                if call["tool_calls"][0]["function"]["name"] not in block:
                    raise UserError("model.template: the tokenizer's chat template does not render tool calls (the "
                                    "call would train as an empty answer); pick a built-in template (chatml / qwen "
                                    "write Hermes-style <tool_call> blocks)")
                answer = block.rstrip()
                exchanges.append(Exchange(before[len(done):], answer, block[len(answer):]))
                done = after
                continue
            if not block.startswith(answered.content):
                raise UserError(
                    "model.template: the tokenizer's chat template changes the answer text; pick a built-in template"
                )
            tail = block[len(answered.content):]
            end = tail.rstrip()
            exchanges.append(Exchange(before[len(done):], answered.content + end, tail[len(end):]))
            done = after
        return exchanges


def detect_template(chat_template: str | None, name_or_path: str = "") -> tuple[str | None, str]:
    """(built-in template name or None, why) from a tokenizer's chat template text and the model's name."""
    text, name = chat_template or "", name_or_path.lower()
    chatml = ("qwen3" if "<think>" in text else "qwen" if "qwen" in (text + name).lower()
              else "intern2" if "internlm" in (text + name).lower() else "yi" if "yi-" in name else "chatml")
    markers = [("<｜User｜>", "deepseek3"), ("[gMASK]<sop>", "glm4"), ("[gMASK]", "chatglm3"),
               ("<|im_start|>", chatml), ("<start_of_turn>", "gemma"), ("<|start_header_id|>", "llama3"),
               ("<|end|>", "phi3"), ("<reserved_106>", "baichuan2"), ("<reserved_102>", "baichuan"),
               ("<<SYS>>", "llama2-zh" if "chinese" in name else "llama2"), ("[INST]", "mistral")]
    for marker, family in markers:
        if marker in text:
            return family, f"{marker} in the tokenizer's chat template"
    names = [("baichuan2", "baichuan2"), ("baichuan", "baichuan"), ("qwen3", "qwen3"), ("qwen", "qwen"),
             ("deepseek-v3", "deepseek3"), ("deepseek-r1", "deepseek3"), ("glm-4", "glm4"), ("chatglm3", "chatglm3"),
             ("internlm2", "intern2"), ("yi-", "yi"), ("gemma", "gemma"), ("phi-3", "phi3"),
             ("llama-3", "llama3"), ("llama3", "llama3"), ("chinese-llama-2", "llama2-zh"),
             ("chinese-alpaca-2", "llama2-zh"), ("llama-2", "llama2"), ("mistral", "mistral"), ("vicuna", "vicuna")]
    if not text:
        for part, family in names:
            if part in name:
                return family, f"no chat template in the tokenizer; {part!r} in the model's name"
        return None, "no chat template in the tokenizer and no known family in the model's name"
    return None, "the tokenizer's chat template matches no built-in family"


def get_template(name: str, tokenizer=None, enable_thinking: bool = True, field: str = "model.template"):
    """A renderer with .render(conversation, system_prompt) -> list[Exchange].
    enable_thinking: reasoning families (qwen3) answer an empty think block, or are given it.
    field: what chose the template, named in its errors (a recipe field, or a command's flag)."""
    if name == "tokenizer":
        if tokenizer is None:
            raise UserError(f"{field}: `tokenizer` needs the model's tokenizer")
        return TokenizerTemplate(tokenizer, field)
    if name not in BUILTIN:
        raise UserError(f"{field}: unknown template {name!r} (known: tokenizer, {', '.join(BUILTIN)})")
    template = BUILTIN[name]
    if tokenizer is None:  # rendering text only (e.g. `data mix` previews): conventional strings
        bos, eos = "<s>", "</s>"
    else:
        bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    if "{eos}" in template.end and not eos:
        raise UserError(f"{field}: {name!r} ends answers with the EOS token, but the tokenizer has none")
    return template.resolve(bos, eos, enable_thinking)


def to_jinja(template: Template, system_prompt: str | None = None) -> str | None:
    """A resolved built-in template as a Jinja chat template, for a tokenizer's `chat_template`.

    `apply_chat_template(messages, add_generation_prompt=True)` then renders exactly what medsft
    trained on, so a merged model talks the same way in any runtime (vLLM, TGI, llama.cpp).
    The assistant header is part of each user turn here, as in the template, so it follows a user
    turn whether or not a generation prompt is asked for. system_prompt: the default system text
    (the recipe's `model.system_prompt`); without it, the template's own. None for the families whose
    rendering depends on the turn's place (reasoning shown only in the final answer, GLM's answer ends):
    their models ship that template themselves, which is the one to keep."""
    if template.turn_dependent:
        return None

    def literal(value: str) -> str:  # a Jinja string literal (Python escapes)
        escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
        return f"'{escaped}'"

    def around(pattern: str, content: str) -> str:  # output of pattern, {content} being a Jinja expression
        before, _, after = pattern.partition("{content}")
        return "{{ " + " + ".join(p for p in (literal(before) if before else "", content,
                                              literal(after) if after else "") if p) + " }}"

    default = system_prompt if system_prompt is not None else template.default_system
    user = around(template.user, "message['content']")
    observation = around(template.observation, "message['content']") if template.observation else user
    parts = [
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}",
        "{%- else -%}{%- set system = " + literal(default) + " -%}{%- set turns = messages -%}",
        "{%- endif -%}",
    ]
    if template.prefix:
        parts.append("{{ " + literal(template.prefix) + " }}")
    if template.system_in_first_user:
        before, _, after = template.system.partition("{content}")
        first_user = around(template.user, f"(({literal(before)} + system + {literal(after)}) if system else '')"
                            " + message['content']")
    else:
        parts.append("{%- if system -%}" + around(template.system, "system") + "{%- endif -%}")
        first_user = user
    answer_end = template.end + template.separator
    parts += [
        "{%- for message in turns -%}",
        "{%- if message['role'] == 'assistant' -%}",
        around("{content}" + answer_end, "message['content']"),
        "{%- elif message['role'] in ('tool', 'observation', 'function') -%}" + observation,
        "{%- elif loop.first -%}" + first_user,
        "{%- else -%}" + user,
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
    return "".join(parts)


WHOLE = "all"  # the flag of an exchange whose prompt carries loss as well as its answer


def supervised_exchanges(exchanges: list[Exchange], train_on: str) -> list[bool | str]:
    """Which exchanges carry loss: True for the answer, WHOLE for prompt and answer (`train_on: all`,
    completion-style data), False for none."""
    if train_on == "last_assistant":
        return [i == len(exchanges) - 1 for i in range(len(exchanges))]
    if train_on == "all":
        return [WHOLE] * len(exchanges)
    return [True] * len(exchanges)
