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
HERMES_CALL = '<tool_call>\n{"name": "lookup", "arguments": {"drug": "X"}}\n</tool_call>'
CALLS = {
    "chatml": HERMES_CALL, "qwen": HERMES_CALL, "qwen3": HERMES_CALL, "intern2": HERMES_CALL, "yi": HERMES_CALL,
    "llama3": '{"name": "lookup", "parameters": {"drug": "X"}}',
    "glm4": 'lookup\n{"drug": "X"}', "chatglm3": 'lookup\n{"drug": "X"}',  # GLM: the name, then the arguments
}


def _expected_answers(conversation, name: str) -> list[str]:
    return [CALLS.get(name, m.content) if m.role == "function_call" else m.content
            for m in conversation.messages if m.role in ("assistant", "function_call")]


def _expected_supervised(tokenizer, conversation, name: str) -> list[str]:
    """Each answer as it is supervised: with its end token; GLM: a newline before it and the next turn's
    marker after it; Qwen3: the final answer opens with an (empty) think block."""
    answers = _expected_answers(conversation, name)
    if name in ("glm4", "chatglm3"):
        roles = [m.role for m in conversation.messages]
        nexts = [roles[i + 1] if i + 1 < len(roles) else None for i, r in enumerate(roles) if i % 2 == 1]
        return ["\n" + a + ("<|observation|>" if n == "observation" else "<|user|>") for a, n in zip(answers, nexts)]
    end = _end_text(tokenizer, name)
    texts = [a + end for a in answers]
    if name == "qwen3" and conversation.messages[-1].role == "assistant":
        texts[-1] = "<think>\n\n</think>\n\n" + texts[-1]
    return texts


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
    assert decoded == _expected_supervised(tiny_tokenizer, conversation, name)
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


# OpenAI tool calls: read as the function_call turn ShareGPT writes, so they render and train the same way.

def _openai_weather(assistant_turn: dict, result: str = "18") -> dict:
    return {"messages": [{"role": "user", "content": "Weather in Paris and Lyon?"}, assistant_turn,
                         {"role": "tool", "content": result, "tool_call_id": "call_1"},
                         {"role": "assistant", "content": "18 °C in both."}]}


def _sharegpt_weather(call: str, result: str = "18") -> dict:
    return {"conversations": [{"from": "human", "value": "Weather in Paris and Lyon?"},
                              {"from": "function_call", "value": call}, {"from": "observation", "value": result},
                              {"from": "gpt", "value": "18 °C in both."}]}


def _read(record: dict, fmt: str) -> Conversation:
    from medsft.data.readers import parse_record

    conversation, reason = parse_record(record, fmt)
    assert reason is None
    return conversation


PARIS = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
LYON = {"name": "get_weather", "arguments": {"city": "Lyon"}}
PARIS_BLOCK = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
LYON_BLOCK = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>'


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("content", ["", None], ids=["empty", "null"])
def test_an_openai_tool_call_trains_exactly_as_its_sharegpt_twin(tiny_tokenizer, name, content):
    template = get_template(name, tiny_tokenizer)
    openai = _encode(tiny_tokenizer, template, _read(_openai_weather(
        {"role": "assistant", "content": content, "tool_calls": [{"type": "function", "id": "c", "function": PARIS}]}),
        "messages"))
    sharegpt = _encode(tiny_tokenizer, template, _read(_sharegpt_weather(
        '{"name": "get_weather", "arguments": {"city": "Paris"}}'), "sharegpt"))
    assert openai["input_ids"] == sharegpt["input_ids"] and openai["labels"] == sharegpt["labels"]
    call = tiny_tokenizer.decode(_supervised_spans(openai["labels"])[0])
    assert "get_weather" in call and "Paris" in call  # the call is supervised, not dropped
    if name in ("qwen", "chatml"):
        assert call == PARIS_BLOCK + "<|im_end|>"


def test_text_and_several_tool_calls_are_supervised_in_one_answer_text_first(tiny_tokenizer):
    """As Qwen2.5's template writes such a message: the text, then one <tool_call> block per call."""
    template = get_template("qwen", tiny_tokenizer)
    turn = {"role": "assistant", "content": "Let me check both.",
            "tool_calls": [{"type": "function", "function": PARIS}, {"type": "function", "function": LYON}]}
    row = _encode(tiny_tokenizer, template, _read(_openai_weather(turn), "messages"))
    decoded = [tiny_tokenizer.decode(s) for s in _supervised_spans(row["labels"])]
    assert decoded == [f"Let me check both.\n{PARIS_BLOCK}\n{LYON_BLOCK}<|im_end|>", "18 °C in both.<|im_end|>"]
    # Several calls with no text: the same blocks as a ShareGPT function_call holding a list of calls.
    calls_only = _encode(tiny_tokenizer, template, _read(_openai_weather({**turn, "content": None}), "messages"))
    listed = _encode(tiny_tokenizer, template, _read(_sharegpt_weather(
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Lyon\\"}"}]'), "sharegpt"))
    assert calls_only["labels"] == listed["labels"]
    assert tiny_tokenizer.decode(_supervised_spans(calls_only["labels"])[0]) == f"{PARIS_BLOCK}\n{LYON_BLOCK}<|im_end|>"
    # Llama 3.1 and GLM write each call their own way, one per line.
    llama = get_template("llama3", tiny_tokenizer).render(_read(_openai_weather(turn), "messages"))
    assert llama[0].answer == ('Let me check both.\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n'
                               '{"name": "get_weather", "parameters": {"city": "Lyon"}}<|eot_id|>')


def test_reasoning_then_a_tool_call_renders_as_qwen3_writes_it(tiny_tokenizer):
    turn = {"role": "assistant", "content": None, "reasoning_content": "Need the weather.",
            "tool_calls": [{"type": "function", "function": PARIS}]}
    exchanges = get_template("qwen3", tiny_tokenizer).render(_read(_openai_weather(turn), "messages"))
    assert exchanges[0].answer == f"<think>\nNeed the weather.\n</think>\n\n{PARIS_BLOCK}<|im_end|>"


def test_several_tool_calls_through_the_tokenizer_template(tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = HERMES_JINJA
    turn = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": PARIS}, {"type": "function", "function": LYON}]}
    row = _encode(tokenizer, get_template("tokenizer", tokenizer), _read(_openai_weather(turn), "messages"))
    decoded = [tokenizer.decode(s) for s in _supervised_spans(row["labels"])]
    assert decoded == [f"{PARIS_BLOCK}{LYON_BLOCK}<|im_end|>", "18 °C in both.<|im_end|>"]


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


# ---- the families added for real data: whole rendered texts, reasoning, detection ----------------

def _rendered(name: str, conversation, tokenizer, **kwargs) -> str:
    exchanges = get_template(name, tokenizer, **kwargs).render(conversation)
    return "".join(e.prompt + e.answer + e.separator for e in exchanges)


TWO_TURNS = Conversation((Message("user", "Q1"), Message("assistant", "A1"), Message("user", "问2"),
                          Message("assistant", "答2")), system="S")


@pytest.mark.parametrize("name, text", [
    ("glm4", "[gMASK]<sop><|system|>\nS<|user|>\nQ1<|assistant|>\nA1<|user|>\n问2<|assistant|>\n答2<|user|>"),
    ("chatglm3", "[gMASK]sop<|system|>\nS<|user|>\nQ1<|assistant|>\nA1<|user|>\n问2<|assistant|>\n答2<|user|>"),
    ("gemma", "<s><start_of_turn>user\nS\n\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
              "<start_of_turn>user\n问2<end_of_turn>\n<start_of_turn>model\n答2<end_of_turn>\n"),
    ("phi3", "<|system|>\nS<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>\nA1<|end|>\n<|user|>\n问2<|end|>\n"
             "<|assistant|>\n答2<|end|>\n"),
    ("deepseek3", "<s>S<｜User｜>Q1<｜Assistant｜>A1</s><｜User｜>问2<｜Assistant｜>答2</s>"),
    ("intern2", "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1"
                "<|im_end|>\n<|im_start|>user\n问2<|im_end|>\n<|im_start|>assistant\n答2<|im_end|>\n"),
    ("llama2-zh", "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST]A1</s><s>[INST] 问2 [/INST]答2</s>"),
])
def test_each_family_renders_its_own_format(tiny_tokenizer, name, text):
    assert _rendered(name, TWO_TURNS, tiny_tokenizer) == text


def test_llama2_zh_brings_its_bilingual_system_prompt(tiny_tokenizer):
    text = _rendered("llama2-zh", SINGLE_EN, tiny_tokenizer)
    assert text.startswith("<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n")


REASONED = Conversation((Message("user", "Q1"), Message("assistant", "<think>\nfirst thought\n</think>\n\nA1"),
                         Message("user", "Q2"), Message("assistant", "<think>\nwhy\n</think>\n\nA2")))


def test_qwen3_trains_the_final_answers_reasoning_and_shows_earlier_answers_without_it(tiny_tokenizer):
    template = get_template("qwen3", tiny_tokenizer)
    row = _encode(tiny_tokenizer, template, REASONED)
    decoded = [tiny_tokenizer.decode(s) for s in _supervised_spans(row["labels"])]
    # As Qwen3's own template renders a chat: earlier answers without their reasoning, the last with it.
    assert decoded == ["A1<|im_end|>", "<think>\nwhy\n</think>\n\nA2<|im_end|>"]
    assert "first thought" not in tiny_tokenizer.decode(row["input_ids"])


def test_qwen3_enable_thinking_decides_where_the_empty_think_block_goes(tiny_tokenizer):
    on = _encode(tiny_tokenizer, get_template("qwen3", tiny_tokenizer), SINGLE_EN)
    off = _encode(tiny_tokenizer, get_template("qwen3", tiny_tokenizer, enable_thinking=False), SINGLE_EN)
    answer = "A body temperature above 38 C.<|im_end|>"
    assert [tiny_tokenizer.decode(s) for s in _supervised_spans(on["labels"])] == ["<think>\n\n</think>\n\n" + answer]
    assert [tiny_tokenizer.decode(s) for s in _supervised_spans(off["labels"])] == [answer]
    # Off: the block is in the prompt, as Qwen3 is prompted with enable_thinking=False.
    assert tiny_tokenizer.decode(off["input_ids"]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n" + answer)
    # Reasoning in the data is trained either way.
    reasoned = _encode(tiny_tokenizer, get_template("qwen3", tiny_tokenizer, enable_thinking=False), REASONED)
    assert tiny_tokenizer.decode(_supervised_spans(reasoned["labels"])[-1]) == "<think>\nwhy\n</think>\n\nA2<|im_end|>"


def test_deepseek3_keeps_r1_reasoning_on_the_final_answer_and_adds_no_empty_block(tiny_tokenizer):
    template = get_template("deepseek3", tiny_tokenizer)
    decoded = [tiny_tokenizer.decode(s) for s in _supervised_spans(_encode(tiny_tokenizer, template, REASONED)["labels"])]
    eos = tiny_tokenizer.eos_token
    assert decoded == [f"A1{eos}", f"<think>\nwhy\n</think>\n\nA2{eos}"]
    plain = _encode(tiny_tokenizer, template, SINGLE_EN)
    assert [tiny_tokenizer.decode(s) for s in _supervised_spans(plain["labels"])] == [f"A body temperature above 38 C.{eos}"]


def test_reasoning_content_in_openai_messages_is_kept_with_the_answer(tmp_path):
    import json

    from medsft.data.readers import read_source

    path = tmp_path / "r1.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Q"},
                                             {"role": "assistant", "content": "A", "reasoning_content": "R"}]}) + "\n")
    conversation = read_source("r1", path).conversations[0]
    assert conversation.messages[-1].content == "<think>\nR\n</think>\n\nA"


def test_glm4_writes_tools_and_calls_its_own_way(tiny_tokenizer):
    tools = '[{"name": "lookup", "description": "drug facts", "parameters": {"type": "object"}}]'
    conversation = Conversation(TOOLS.messages, tools=tools)
    text = _rendered("glm4", conversation, tiny_tokenizer)
    assert text.startswith('[gMASK]<sop><|system|>\n# 可用工具\n\n## lookup\n\n{\n    "name": "lookup"')
    assert '<|assistant|>\nlookup\n{"drug": "X"}<|observation|>\n{"dose": "10 mg"}<|assistant|>\n' in text


@pytest.mark.parametrize("chat_template, model, family", [
    ("{% if enable_thinking %}<think>{% endif %}<|im_start|>", "org/model", "qwen3"),
    ("<|im_start|>{{ bos_token }}", "internlm/internlm2-chat-7b", "intern2"),
    ("<|im_start|>", "01-ai/Yi-6B-Chat", "yi"),
    ("{{ bos_token }}<｜User｜>{{ m }}<｜Assistant｜>", "deepseek-ai/DeepSeek-V3", "deepseek3"),
    ("[gMASK]<sop><|user|>", "THUDM/glm-4-9b-chat", "glm4"),
    ("<start_of_turn>user", "google/gemma-2-2b-it", "gemma"),
    ("<|user|>\n{{ m }}<|end|>\n<|assistant|>", "microsoft/Phi-3-mini-4k-instruct", "phi3"),
    ("<<SYS>>[INST]", "hfl/chinese-alpaca-2-7b", "llama2-zh"),
    (None, "THUDM/chatglm3-6b", "chatglm3"),
    (None, "Qwen/Qwen3-8B", "qwen3"),
])
def test_new_families_are_detected_from_the_tokenizer_or_the_name(chat_template, model, family):
    from medsft.data.templates import detect_template

    assert detect_template(chat_template, model)[0] == family


def test_a_default_template_becomes_the_builtin_of_a_family_whose_own_template_cannot_be_split(tmp_path, tiny_tokenizer):
    from medsft.pipeline.prepare import _template_name
    from medsft.recipe import ModelConfig

    lines = []
    tiny_tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tiny_tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m.content }}<think>{% endfor %}"
    model = ModelConfig(name_or_path="org/some-model")
    assert _template_name(model, tiny_tokenizer, lines.append) == "qwen3" and model.template == "qwen3"
    assert "model.template: qwen3 (<|im_start|> in the tokenizer's chat template" in lines[0]
    chosen = ModelConfig(name_or_path="org/some-model", template="chatml")  # the recipe's choice stands
    assert _template_name(chosen, tiny_tokenizer, lines.append) == "chatml"
