"""Using a trained model: merge, the exported chat template, batch generation, chat, the server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from medsft.cli import main
from medsft.data.records import Conversation, Message
from medsft.data.templates import BUILTIN, get_template, to_jinja
from medsft.eval.generate import prompt_for
from sample_data import sample_sources


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished LoRA run directory on the tiny model (qwen template, a system prompt)."""
    from medsft.pipeline.run import train
    from medsft.recipe import parse_recipe

    folder = tmp_path_factory.mktemp("lora-run")
    tree = {
        "model": {"name_or_path": str(tiny_model_dir), "template": "qwen", "system_prompt": "You are a doctor."},
        "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"sources": sample_sources(folder / "data"), "max_length": 512, "val_fraction": 0.1},
        "stages": [{"name": "mixed", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 4}],
        "monitor": {"probes": False},
        "train": {"learning_rate": 2e-2, "batch_size": 4, "save_steps": 2, "seed": 3},
        "output_dir": str(folder / "run"),
    }
    return train(parse_recipe(tree, "test"), log=lambda *_: None).run_dir


CONVERSATIONS = [
    [{"role": "user", "content": "发烧了怎么办？"}],
    [{"role": "system", "content": "Answer in one line, 'plainly'.\n"}, {"role": "user", "content": "Q1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
     {"role": "assistant", "content": "A2"}],
]


# Families whose rendering depends on a turn's place (reasoning only in the final answer, GLM's answer
# ends) are not exported: their models ship that template themselves, and merge keeps it.
OWN_TEMPLATE = {"qwen3", "deepseek3", "glm4", "chatglm3"}


def test_families_with_their_own_template_are_not_exported(tiny_tokenizer):
    assert {name for name, template in BUILTIN.items() if template.turn_dependent} == OWN_TEMPLATE
    for name in BUILTIN:
        exported = to_jinja(get_template(name, tiny_tokenizer))
        assert (exported is None) == (name in OWN_TEMPLATE)


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - OWN_TEMPLATE))
def test_exported_jinja_renders_what_medsft_trains_on(name, tiny_tokenizer):
    template = get_template(name, tiny_tokenizer)
    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = to_jinja(template)
    for messages in CONVERSATIONS:
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        turns = [Message(m["role"], m["content"]) for m in messages if m["role"] != "system"]
        if turns[-1].role == "user":  # a prompt: what the model sees before it answers
            expected = prompt_for(template, turns[-1].content, system, turns[:-1]) if system is None else \
                _prompt_with_system(template, turns, system)
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a whole conversation, as trained
            exchanges = template.render(Conversation(tuple(turns), system=system))
            expected = "".join(e.prompt + e.answer + e.separator for e in exchanges)
            rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        assert rendered == expected, name


def _prompt_with_system(template, turns, system):
    exchanges = template.render(Conversation(tuple(turns) + (Message("assistant", ""),), system=system))
    return "".join(e.prompt + e.answer + e.separator for e in exchanges[:-1]) + exchanges[-1].prompt


def test_exported_jinja_carries_the_recipes_system_prompt(tiny_tokenizer):
    template = get_template("chatml", tiny_tokenizer)
    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = to_jinja(template, "你是医生。")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>system\n你是医生。<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_merge_gives_the_logits_of_base_plus_adapter(lora_run, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert main(["merge", str(lora_run), "--out", str(out), "--max-shard-size", "200KB"]) == 0
    assert len(list(out.glob("*.safetensors"))) > 1  # sharded as asked
    assert not list(out.glob("*.bin"))
    info = json.loads((out / "medsft_merge.json").read_text())
    assert info["template"] == "qwen" and info["adapter"].endswith("adapter")

    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft
    recipe = yaml.safe_load((lora_run / "recipe.yaml").read_text())
    base = AutoModelForCausalLM.from_pretrained(recipe["model"]["name_or_path"])
    tuned = PeftModel.from_pretrained(base, lora_run / "adapter").eval()
    ids = torch.tensor([[5, 40, 300, 17, 99, 250, 8, 3]])
    with torch.no_grad():
        expected, got = tuned(input_ids=ids).logits, merged(input_ids=ids).logits
        with tuned.disable_adapter():
            plain = tuned(input_ids=ids).logits
    print(f"largest |merged - base+adapter| logit difference: {(expected - got).abs().max().item():.3g} "
          f"(the adapter moves logits by up to {(expected - plain).abs().max().item():.3g})")
    assert (expected - got).abs().max().item() < 1e-5
    assert (expected - plain).abs().max().item() > 1e-3  # the adapter did change something

    tokenizer = AutoTokenizer.from_pretrained(out)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nYou are a doctor.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in json.loads((out / "generation_config.json").read_text())["eos_token_id"]


def test_merge_keeps_the_runs_rope_scaling(lora_run, tmp_path):
    """A LoRA run trained on a RoPE-scaled base: the merged model is that base plus the adapter."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medsft.models import load_model

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.config.rope_parameters["rope_type"] == "linear" and merged.config.rope_parameters["factor"] == 8.0
    scaled = load_model(recipe["model"]["name_or_path"], rope_scaling=recipe["model"]["rope_scaling"])
    tuned = PeftModel.from_pretrained(scaled, run / "adapter").eval()
    unscaled = PeftModel.from_pretrained(load_model(recipe["model"]["name_or_path"]), run / "adapter").eval()
    ids = torch.tensor([list(range(5, 60))])
    with torch.no_grad():
        expected, got, other = tuned(input_ids=ids).logits, merged(input_ids=ids).logits, unscaled(input_ids=ids).logits
    assert (expected - got).abs().max().item() < 1e-5
    assert (other - got).abs().max().item() > 1e-3  # the scaling matters at these positions


def test_merge_honours_a_saved_adapter_scale(lora_run, tmp_path):
    import shutil

    from safetensors.torch import load_file

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_run / "adapter", adapter)
    assert main(["merge", str(adapter), "--out", str(tmp_path / "whole")]) == 0
    (adapter / "medsft_scale.json").write_text('{"scale": 0.5}')
    assert main(["merge", str(adapter), "--out", str(tmp_path / "half")]) == 0
    base_dir = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base, whole, half = (load_file(Path(folder) / "model.safetensors")
                         for folder in (base_dir, tmp_path / "whole", tmp_path / "half"))
    changed = [name for name in base if not torch.equal(base[name], whole[name])]
    assert changed  # the adapter moved the weights it targets
    for name in base:  # each weight moved exactly half as far
        assert torch.allclose(half[name] - base[name], 0.5 * (whole[name] - base[name]), atol=1e-6), name
    assert json.loads((tmp_path / "half" / "medsft_merge.json").read_text())["adapter_scale"] == 0.5


@pytest.mark.parametrize("argv, message", [
    (["merge", "{model}", "--out", "{tmp}/o"], "nothing to merge"),
    (["merge", "{tmp}/nowhere", "--out", "{tmp}/o"], "no such folder"),
    (["merge", "{run}", "--out", "{tmp}/o", "--checkpoint", "checkpoint-999"], "no checkpoint-999"),
    (["merge", "{run}", "--out", "{run}"], "not empty"),
])
def test_merge_errors_are_one_line(argv, message, lora_run, tiny_model_dir, tmp_path, capsys):
    argv = [a.format(model=tiny_model_dir, tmp=tmp_path, run=lora_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_merge_of_a_checkpoint(lora_run, tmp_path):
    checkpoint = sorted(lora_run.glob("checkpoints/*/checkpoint-*"))[0].name
    assert main(["merge", str(lora_run), "--checkpoint", checkpoint, "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "medsft_merge.json").read_text())["adapter"].endswith(checkpoint)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generate_answers_every_format_in_file_order(lora_run, tmp_path, capsys):
    from conftest import write_jsonl

    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"instruction": "发烧了怎么办？"},  # alpaca without output
        {"instruction": "What is a fever?", "input": "", "output": "A raised temperature."},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "Can I take ibuprofen?"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Cough?"}]},
        {"question": "How long does a cold last?"},
    ])
    out = tmp_path / "answers.jsonl"
    assert main(["generate", str(lora_run), "--in", str(questions), "--out", str(out), "--max-new-tokens", "6",
                 "--batch-size", "2"]) == 0
    rows = _rows(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["reference"] == "A raised temperature." and "reference" not in rows[0]
    assert rows[2]["messages"][-1] == {"role": "user", "content": "Can I take ibuprofen?"}
    assert len(rows[2]["messages"]) == 3
    assert rows[3]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert all(r["source"].endswith(f"q.jsonl:{r['index'] + 1}") for r in rows)
    assert all(0 < r["tokens"] <= 6 for r in rows)


def test_generate_is_resumable_and_greedy_answers_do_not_change(lora_run, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("\n".join(f"Question number {i}?" for i in range(7)) + "\n", encoding="utf-8")
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    argv = ["generate", str(lora_run), "--in", str(questions), "--max-new-tokens", "5", "--batch-size", "3"]
    assert main(argv + ["--out", str(whole)]) == 0
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    resumed.write_text("".join(lines[:3]) + lines[3][:10], encoding="utf-8")  # killed mid-write
    assert main(argv + ["--out", str(resumed)]) == 0
    assert _rows(resumed) == _rows(whole)


def test_generate_sampling_is_seeded(lora_run, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("Hello\nWhat is a fever?\n", encoding="utf-8")
    answers = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.jsonl"
        assert main(["generate", str(lora_run), "--in", str(questions), "--out", str(out), "--temperature", "1.5",
                     "--max-new-tokens", "12", "--seed", seed]) == 0
        answers.append([r["answer"] for r in _rows(out)])
    assert answers[0] == answers[1] and answers[0] != answers[2]


def test_generate_bad_records_fail_with_the_way_to_skip_or_are_skipped(lora_run, tmp_path, capsys):
    from conftest import write_jsonl

    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Fine?"}, "{not json", {"foo": 1}])
    out = tmp_path / "o.jsonl"
    assert main(["generate", str(lora_run), "--in", str(questions), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "q.jsonl:2" in err and "--on-bad-record skip" in err and len(err.splitlines()) == 1
    assert main(["generate", str(lora_run), "--in", str(questions), "--out", str(out), "--on-bad-record", "skip",
                 "--max-new-tokens", "3"]) == 0
    assert len(_rows(out)) == 1
    rejects = _rows(tmp_path / "o.rejects.jsonl")
    assert [r["line"] for r in rejects] == [2, 3]


def test_chat_in_a_real_terminal_streams_answers_and_obeys_commands(lora_run):
    import sys

    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "medsft", "chat", str(lora_run), "--compare-base",
                                           "--max-new-tokens", "8"], encoding="utf-8", timeout=120,
                          env={"TERM": "dumb", "PYTHONUNBUFFERED": "1", "TRANSFORMERS_VERBOSITY": "error",
                               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PATH": "/usr/bin:/bin"})
    child.expect("/reset clears the conversation")
    child.expect_exact("you> ")
    child.sendline("发烧了怎么办？")
    child.expect_exact("base> ")
    child.expect_exact("tuned> ")
    child.expect_exact("you> ")
    child.sendline("/system Be brief.")
    child.expect_exact("(system prompt set; conversation cleared)")
    child.sendline("/reset")
    child.expect_exact("(conversation cleared)")
    child.sendline("/nonsense")
    child.expect_exact("(unknown command /nonsense")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_stream_gives_the_greedy_answer_and_holds_back_stop_strings(lora_run):
    from medsft.eval.generate import Sampling, generate
    from medsft.serve.loading import load_for_use, resolve_source
    from medsft.serve.stream import AnswerStream

    loaded = load_for_use(resolve_source(str(lora_run)))
    question = "What is a fever?"
    expected = generate(loaded.model, loaded.chat, [question], max_new_tokens=12, label=None)[0]
    stream = AnswerStream(loaded.model, loaded.chat, loaded.chat.prompt(question), Sampling(12))
    pieces = list(stream)
    assert "".join(pieces) == stream.text == expected.text and stream.tokens == expected.tokens
    # Streamed, not one block (the tiny model may emit stray bytes, which wait for a whole character).
    assert len(pieces) > 1 or "\ufffd" in expected.text
    if len(expected.text) > 4:
        stop = expected.text[2:5]
        cut = AnswerStream(loaded.model, loaded.chat, loaded.chat.prompt(question), Sampling(12), stop=(stop,))
        shown = "".join(cut)
        assert shown == expected.text[: expected.text.find(stop)] and cut.finish_reason == "stop"


# ---------------------------------------------------------------------------------------------
# The server: a real `medsft serve` process on loopback, talked to with the official openai client


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(lora_run):
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "medsft", "serve", str(lora_run), "--port", str(port), "--name", "tiny", "--ui",
         "--api-key", "secret", "--max-prompt-tokens", "320", "--max-request-bytes", "20000", "--max-tokens", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                assert json.loads(response.read())["status"] == "ok"
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail("the server did not start: " + (process.stdout.read() if process.stdout else ""))
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


def _client(url: str, key: str = "secret"):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_server_answers_with_the_openai_client_plain_and_streamed(server):
    client = _client(server)
    assert sorted(m.id for m in client.models.list().data) == ["tiny", "tiny-base"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a fever?"}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    text = plain.choices[0].message.content
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.usage.completion_tokens <= 8
    pieces = []
    for chunk in client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == text  # greedy: the same answer, streamed
    base = client.chat.completions.create(model="tiny-base", messages=messages, max_tokens=8, temperature=0)
    assert base.model == "tiny-base"
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.2, seed=5)
    same = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.2, seed=5)
    assert again.choices[0].message.content == same.choices[0].message.content


def test_server_refuses_bad_requests_with_openai_errors(server):
    import urllib.error
    import urllib.request

    import openai

    client = _client(server)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        _client(server, "wrong").chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "fever " * 400}])
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=500)
    assert caught.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "assistant", "content": "hi"}])

    def post(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(server + "/v1/chat/completions", data=body, method="POST",
                                         headers={"Authorization": "Bearer secret", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, body = post(b'{"model": "tiny", "messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = post(json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 30000}]}).encode())
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = post(b"[1, 2]")
    assert status == 400
    try:  # a path the server does not have: an OpenAI error body too
        urllib.request.urlopen(server + "/v1/completion", timeout=60)
    except urllib.error.HTTPError as error:
        status, body = error.code, json.loads(error.read())
    assert status == 404 and body["error"] == {"message": "no route GET /v1/completion", "type": "invalid_request_error",
                                               "param": None, "code": "not_found"}
    # After all that, it still answers.
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices[0].message.content is not None


def test_server_under_a_bounded_load_has_no_errors(server):
    from concurrent.futures import ThreadPoolExecutor

    client = _client(server)

    def one_client(number: int) -> int:
        done = 0
        for i in range(5):  # bench/serve_load.py runs 16 x 20 and prints the latencies
            answer = client.chat.completions.create(
                model="tiny" if i % 2 else "tiny-base", max_tokens=3, temperature=0,
                messages=[{"role": "user", "content": f"Question {number}-{i}: what helps a cough?"}])
            done += answer.choices[0].message.content is not None
        return done

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(one_client, range(16))) == 16 * 5


def test_the_page_is_self_contained(server):
    import urllib.request

    with urllib.request.urlopen(server + "/", timeout=30) as response:
        page = response.read().decode()
    assert "/v1/chat/completions" in page and '"tiny-base", "tiny"' in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def _chromium() -> tuple[str, str] | None:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs chromium and chromedriver (apt-get install chromium "
                                                 "chromium-driver); the page's other checks run without them")
def test_the_page_in_headless_chromium_shows_base_and_tuned_answers(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(server + "/")
        columns = driver.find_elements(By.CSS_SELECTOR, ".column")
        assert [c.get_attribute("data-model") for c in columns] == ["tiny-base", "tiny"]
        driver.find_element(By.ID, "key").send_keys("secret")
        box = driver.find_element(By.ID, "question")
        box.send_keys("What is a fever?")
        box.send_keys(Keys.ENTER)
        WebDriverWait(driver, 120).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".assistant[data-done='1']")) == 2)
        for column in columns:
            turns = column.find_elements(By.CSS_SELECTOR, ".turn")
            assert [t.get_attribute("class") for t in turns] == ["turn user", "turn assistant"]
            assert turns[0].text == "What is a fever?"
        assert not driver.find_elements(By.CSS_SELECTOR, ".error")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_a_client_leaving_mid_stream_frees_the_server(server):
    import http.client
    import time
    import urllib.request

    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = json.dumps({"model": "tiny", "stream": True, "max_tokens": 64, "temperature": 0,
                       "messages": [{"role": "user", "content": "Tell me about fevers."}]})
    connection.request("POST", "/v1/chat/completions", body,
                       {"Authorization": "Bearer secret", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")  # the first event arrived
    connection.close()  # and the client is gone
    deadline = time.time() + 60
    while json.loads(urllib.request.urlopen(server + "/health", timeout=10).read())["waiting"] and time.time() < deadline:
        time.sleep(0.2)
    assert json.loads(urllib.request.urlopen(server + "/health", timeout=10).read())["waiting"] == 0
    answer = _client(server).chat.completions.create(model="tiny-base", max_tokens=4, temperature=0,
                                                     messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_the_vllm_engine_command_and_its_refusal_without_vllm(lora_run, capsys):
    import importlib.util

    from medsft.serve.loading import resolve_source
    from medsft.serve.vllm import vllm_command

    source = resolve_source(str(lora_run))
    command = vllm_command(source, "medical", "127.0.0.1", 8001, "key", Path("/tmp/t.jinja"), python="python")
    assert command[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == source.base
    assert command[command.index("--lora-modules") + 1] == f"medical={source.adapter}"
    assert command[command.index("--served-model-name") + 1] == "medical-base"
    assert command[command.index("--chat-template") + 1] == "/tmp/t.jinja"
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--api-key" in command
    if importlib.util.find_spec("vllm") is None:
        assert main(["serve", str(lora_run), "--engine", "vllm"]) == 2
        assert "vllm is not installed" in capsys.readouterr().err


def test_serve_without_its_extra_names_the_extra_before_loading_a_model(lora_run, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    monkeypatch.setattr("medsft.serve.loading.load_for_use", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["serve", str(lora_run)]) == 2
    assert "pip install 'medsft[serve]'" in capsys.readouterr().err


def test_augment_rewrites_through_an_openai_endpoint_on_loopback(server, tmp_path, monkeypatch, capsys):
    """The rewrite augmenter against a real server (medsft serve, a tiny model): every rewrite is
    either kept having passed the fact check, or rejected with its reason; nothing is lost."""
    from medsft.data.rewrite import fact_check

    source = tmp_path / "medical.jsonl"
    pairs = [("What is the dose of quelpram?", "Quelpram: 25 mg twice daily."),
             ("Which drug treats Varnex fever?", "Varnex fever is treated with quelpram."),
             ("Who should not take sormex?", "Avoid sormex in people with asthma.")]
    source.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in pairs), encoding="utf-8")
    out = tmp_path / "augmented.jsonl"
    argv = ["augment", str(source), "--out", str(out), "--augmenters", "rewrite", "--per-record", "2",
            "--rewrite-url", server + "/v1", "--rewrite-model", "tiny", "--rewrite-key-env", "MEDSFT_TEST_KEY",
            "--rewrite-max-tokens", "24"]
    monkeypatch.setenv("MEDSFT_TEST_KEY", "secret")
    assert main(argv) == 0
    report = json.loads((tmp_path / "augmented.report.json").read_text())
    counts = report["per_augmenter"]["rewrite"]
    asked = 2 * len(pairs) + 1  # two paraphrases per question, one expansion of the one terse answer
    assert counts["made"] + counts["rejected"] == asked
    rejects = [json.loads(line) for line in (tmp_path / "augmented.rewrite_rejects.jsonl").read_text().splitlines()] \
        if counts["rejected"] else []
    assert len(rejects) == counts["rejected"] and all(r["reason"] and r["line"] >= 1 for r in rejects)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_line = {i + 1: pair for i, pair in enumerate(pairs)}
    for row in rows[len(pairs):]:  # the kept rewrites: each passes the check against its origin
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        origin_q, origin_a = by_line[row["line"]]
        assert (question == origin_q) != (answer == origin_a)
        if question != origin_q:
            assert fact_check(origin_q, question) is None
    monkeypatch.setenv("MEDSFT_TEST_KEY", "wrong")
    assert main(argv) == 2
    assert "HTTP 401" in capsys.readouterr().err


def test_serve_says_in_one_line_when_it_cannot_listen(lora_run, capsys, monkeypatch):
    import socket

    import medsft.serve.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded before the port was checked")

    monkeypatch.setattr(loading, "load_for_use", no_loading)
    assert main(["serve", str(lora_run), "--port", "99999"]) == 2
    assert "--port: 99999 is not a port number (1-65535)" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(lora_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.splitlines()) == 1


def test_a_model_without_a_chat_template_names_the_template_flag(tiny_model_dir, tmp_path):
    import shutil

    from medsft.errors import UserError
    from medsft.serve.loading import load_for_use, resolve_source

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UserError, match=r"^--template: `tokenizer` was asked for, but this tokenizer has no chat"):
        load_for_use(resolve_source(str(model)))
    assert load_for_use(resolve_source(str(model), template="chatml")).chat.template.name == "chatml"
