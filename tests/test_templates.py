"""Labels decode to exactly the assistant texts plus their end tokens, for every template."""

from __future__ import annotations

import pytest

from medsft.data.encode import IGNORE, encode_batch
from medsft.data.records import Conversation, Message
from medsft.data.templates import BUILTIN, get_template, supervised_exchanges

SINGLE_EN = Conversation((Message("user", "What is a fever?"), Message("assistant", "A body temperature above 38 C.")))
SINGLE_ZH = Conversation((Message("user", "发烧怎么办？"), Message("assistant", "多喝水，注意休息，必要时就医。")), system="你是医生。")
MULTI = Conversation(
    (
        Message("user", "Hi, I have a cough."),
        Message("assistant", "How long have you had it?"),
        Message("user", "两周了。"),
        Message("assistant", "咳嗽超过两周，建议去医院检查。"),
    ),
    system="You are a careful doctor.",
)
TOOLS = Conversation(
    (
        Message("user", "Look up drug X."),
        Message("function_call", '{"name": "lookup", "arguments": {"drug": "X"}}'),
        Message("observation", '{"dose": "10 mg"}'),
        Message("assistant", "The usual dose is 10 mg."),
    )
)


def _supervised_spans(labels: list[int]) -> list[list[int]]:
    spans, current = [], []
    for token in labels:
        if token == IGNORE:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(token)
    if current:
        spans.append(current)
    return spans


def _encode(tokenizer, template, conversation, train_on="all_assistant", max_length=4096, too_long="drop"):
    exchanges = template.render(conversation)
    flags = supervised_exchanges(exchanges, train_on)
    tokenize = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    row = encode_batch([exchanges], [flags], tokenize, max_length, too_long)
    return {k: v[0] for k, v in row.items()}


def _end_text(tokenizer, name: str) -> str:
    end = BUILTIN[name].end if name != "tokenizer" else "<|im_end|>"
    return end.replace("{eos}", tokenizer.eos_token)


# How each family writes TOOLS' call: Hermes blocks (ChatML / Qwen), Llama 3.1's JSON with "parameters",
# the record's own text elsewhere.
CALLS = {
    "chatml": '<tool_call>\n{"name": "lookup", "arguments": {"drug": "X"}}\n</tool_call>',
    "qwen": '<tool_call>\n{"name": "lookup", "arguments": {"drug": "X"}}\n</tool_call>',
    "llama3": '{"name": "lookup", "parameters": {"drug": "X"}}',
}


def _expected_answers(conversation, name: str) -> list[str]:
    return [CALLS.get(name, m.content) if m.role == "function_call" else m.content
            for m in conversation.messages if m.role in ("assistant", "function_call")]


# The tiny tokenizer's own template renders no tool calls: the tokenizer path's tool test is
# test_tool_calls_through_the_tokenizer_template.
CASES = [(name, conversation) for name in ["tokenizer", *BUILTIN]
         for conversation in (SINGLE_EN, SINGLE_ZH, MULTI, TOOLS) if not (name == "tokenizer" and conversation is TOOLS)]


@pytest.mark.parametrize("name, conversation", CASES,
                         ids=[f"{c[1] is TOOLS and 'tools' or 'chat'}-{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_supervised_tokens_are_exactly_the_answers(tiny_tokenizer, name, conversation):
    template = get_template(name, tiny_tokenizer)
    row = _encode(tiny_tokenizer, template, conversation)
    spans = _supervised_spans(row["labels"])
    decoded = [tiny_tokenizer.decode(span) for span in spans]
    end = _end_text(tiny_tokenizer, name)
    assert decoded == [answer + end for answer in _expected_answers(conversation, name)]
    # Every supervised token is the input token at that position (labels are not shifted here).
    for token, label in zip(row["input_ids"], row["labels"]):
        assert label in (IGNORE, token)
    # The whole sequence decodes to the rendered text: nothing is lost at the seams.
    full = "".join(e.prompt + e.answer + e.separator for e in template.render(conversation))
    assert tiny_tokenizer.decode(row["input_ids"]) == full[: len(full) - len(template.render(conversation)[-1].separator)]


def test_last_assistant_supervises_only_the_final_answer(tiny_tokenizer):
    template = get_template("qwen", tiny_tokenizer)
    row = _encode(tiny_tokenizer, template, MULTI, train_on="last_assistant")
    decoded = [tiny_tokenizer.decode(s) for s in _supervised_spans(row["labels"])]
    assert decoded == ["咳嗽超过两周，建议去医院检查。<|im_end|>"]


def test_last_assistant_keeps_its_answer_by_dropping_the_earliest_history(tiny_tokenizer):
    """Too long for the whole conversation: the last answer stays, with the most recent exchanges
    that fit before it; only when the last exchange alone does not fit is the record left out."""
    template = get_template("qwen", tiny_tokenizer)
    whole = _encode(tiny_tokenizer, template, MULTI, train_on="last_assistant")
    exchanges = template.render(MULTI)
    tokenize = lambda texts: tokenizer_ids(tiny_tokenizer, texts)  # noqa: E731
    last = sum(len(x) for x in tokenize([exchanges[-1].prompt, exchanges[-1].answer]))
    cut = _encode(tiny_tokenizer, template, MULTI, train_on="last_assistant", max_length=last + 1)
    assert cut["length"] == last and cut["history_dropped"] == len(exchanges) - 1
    assert [tiny_tokenizer.decode(s) for s in _supervised_spans(cut["labels"])] == \
        [tiny_tokenizer.decode(s) for s in _supervised_spans(whole["labels"])]
    assert tiny_tokenizer.decode(cut["input_ids"]) == exchanges[-1].prompt + exchanges[-1].answer
    assert _encode(tiny_tokenizer, template, MULTI, train_on="last_assistant", max_length=last - 1)["length"] == 0
    # all_assistant keeps cutting later exchanges, never earlier ones
    early = _encode(tiny_tokenizer, template, MULTI, max_length=whole["length"] - 1)
    assert early["history_dropped"] == 0 and early["exchanges_dropped"] >= 1


def test_too_long_truncate_cuts_the_answer_instead_of_dropping_the_record(tiny_tokenizer):
    template = get_template("qwen", tiny_tokenizer)
    exchanges = template.render(MULTI)
    prompt, answer = tokenizer_ids(tiny_tokenizer, [exchanges[0].prompt, exchanges[0].answer])
    limit = len(prompt) + len(answer) - 2
    assert _encode(tiny_tokenizer, template, MULTI, max_length=limit)["length"] == 0  # drop, the default
    row = _encode(tiny_tokenizer, template, MULTI, max_length=limit, too_long="truncate")
    assert row["length"] == limit and row["answer_truncated"] == 1
    spans = [tiny_tokenizer.decode(s) for s in _supervised_spans(row["labels"])]
    assert spans == [tiny_tokenizer.decode(answer[:-2])] and not spans[0].endswith("<|im_end|>")
    assert _encode(tiny_tokenizer, template, MULTI, max_length=len(prompt), too_long="truncate")["length"] == 0


SCHEMA = [{"type": "function", "function": {"name": "lookup", "description": "Find a drug's dose",
                                           "parameters": {"type": "object", "properties": {"drug": {"type": "string"}}}}}]
TOOL_RECORD = Conversation(TOOLS.messages, tools=__import__("json").dumps(SCHEMA))

# A ChatML chat template with Hermes tool use, as tool-capable chat models ship (written for this test).
HERMES_JINJA = (
    "{% if tools %}<|im_start|>system\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools><|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% for c in m.tool_calls %}<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}"
    "\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_tool_calls_through_the_tokenizer_template(tiny_tokenizer):
    """template: tokenizer gets the tools (tools=) and the call (tool_calls); the call is supervised in
    the template's own format, the tool's result is not; a template that drops calls is refused."""
    import copy

    from medsft.errors import UserError

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = HERMES_JINJA
    template = get_template("tokenizer", tokenizer)
    row = _encode(tokenizer, template, TOOL_RECORD)
    decoded = [tokenizer.decode(s) for s in _supervised_spans(row["labels"])]
    assert decoded == ['<tool_call>\n{"name": "lookup", "arguments": {"drug": "X"}}\n</tool_call><|im_end|>',
                       "The usual dose is 10 mg.<|im_end|>"]
    prompt = template.render(TOOL_RECORD)[0].prompt
    assert "<tools>" in prompt and '"name": "lookup"' in prompt  # the schema reached the template
    assert "<tool_response>" in template.render(TOOL_RECORD)[1].prompt
    with pytest.raises(UserError, match="does not render tool calls"):
        get_template("tokenizer", tiny_tokenizer).render(TOOL_RECORD)


def test_builtin_families_show_the_tools_their_own_way(tiny_tokenizer):
    qwen = get_template("qwen", tiny_tokenizer).render(TOOL_RECORD)
    assert "<tools>\n" + __import__("json").dumps(SCHEMA[0]) + "\n</tools>" in qwen[0].prompt
    assert qwen[1].prompt.startswith("<|im_start|>user\n<tool_response>\n")
    llama = get_template("llama3", tiny_tokenizer).render(TOOL_RECORD)
    assert '"parameters": dictionary of argument name' in llama[0].prompt
    assert llama[0].answer.startswith('{"name": "lookup", "parameters"')


def tokenizer_ids(tokenizer, texts):
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_train_on_all_supervises_prompts_too_and_is_a_different_cache_entry(tiny_tokenizer):
    from medsft.data.encode import content_fingerprint

    template = get_template("qwen", tiny_tokenizer)
    row = _encode(tiny_tokenizer, template, MULTI, train_on="all")
    assert row["labels"] == row["input_ids"]  # every token carries loss, the prompts' included
    assert row["supervised_tokens"] == len(row["input_ids"])
    answers_only = _encode(tiny_tokenizer, template, MULTI)
    assert answers_only["supervised_tokens"] < row["supervised_tokens"]
    exchanges = template.render(MULTI)
    assert content_fingerprint([exchanges], [supervised_exchanges(exchanges, "all")]) != \
        content_fingerprint([exchanges], [supervised_exchanges(exchanges, "all_assistant")])


def test_qwen_matches_the_tokenizers_own_chatml(tiny_tokenizer):
    """Our built-in ChatML renders the same text as the tokenizer's Jinja ChatML template."""
    ours = get_template("qwen", tiny_tokenizer).render(MULTI)
    theirs = get_template("tokenizer", tiny_tokenizer).render(MULTI)
    assert [(e.prompt, e.answer) for e in ours] == [(e.prompt, e.answer) for e in theirs]


def test_llama2_puts_the_system_prompt_inside_the_first_inst(tiny_tokenizer):
    exchanges = get_template("llama2", tiny_tokenizer).render(MULTI)
    assert exchanges[0].prompt == "<s>[INST] <<SYS>>\nYou are a careful doctor.\n<</SYS>>\n\nHi, I have a cough. [/INST]"
    assert exchanges[1].prompt == "<s>[INST] 两周了。 [/INST]"
    assert exchanges[0].answer == "How long have you had it?</s>"


def test_truncation_drops_whole_later_turns_never_an_end_token(tiny_tokenizer):
    template = get_template("qwen", tiny_tokenizer)
    full = _encode(tiny_tokenizer, template, MULTI)
    first_exchange = _encode(
        tiny_tokenizer, template, Conversation(MULTI.messages[:2], system=MULTI.system)
    )
    cut = _encode(tiny_tokenizer, template, MULTI, max_length=full["length"] - 1)
    assert cut["exchanges_dropped"] == 1
    assert cut["input_ids"] == first_exchange["input_ids"]
    decoded = [tiny_tokenizer.decode(s) for s in _supervised_spans(cut["labels"])]
    assert decoded == ["How long have you had it?<|im_end|>"]
    too_short = _encode(tiny_tokenizer, template, MULTI, max_length=first_exchange["length"] - 1)
    assert too_short["length"] == 0 and too_short["exchanges_dropped"] == 2


def test_template_errors_are_user_errors(tiny_tokenizer):
    from medsft.errors import UserError

    with pytest.raises(UserError, match="unknown template"):
        get_template("gpt5", tiny_tokenizer)
    tiny_tokenizer_copy = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tiny_tokenizer_copy.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        get_template("tokenizer", tiny_tokenizer_copy)
