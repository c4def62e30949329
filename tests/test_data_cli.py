"""`medsft data mix` and `medsft data inspect`, and bad records through a whole run."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medsft.cli import main

from conftest import write_jsonl


def _big_sources(tmp_path: Path, n_medical=1400, n_general=700) -> dict[str, Path]:
    rng = random.Random(0)
    medical = [{"instruction": f"What treats condition {i}?", "input": "", "output": f"Drug {i}, {rng.randint(1, 9)} mg daily."}
               for i in range(n_medical)]
    general = [{"conversations": [{"from": "human", "value": f"Tell me about topic {i}."},
                                  {"from": "gpt", "value": f"Topic {i} is interesting. " * rng.randint(3, 8)}]}
               for i in range(n_general)]
    return {"medical": write_jsonl(tmp_path / "medical.jsonl", medical),
            "general": write_jsonl(tmp_path / "general.jsonl", general)}


def _recipe(tmp_path: Path, model_dir: Path, sources: dict[str, Path], **data) -> Path:
    tree = {
        "model": {"name_or_path": str(model_dir), "template": "qwen"},
        "data": {"sources": [{"name": n, "path": str(p)} for n, p in sources.items()], "val_fraction": 0.05, **data},
        "stages": [{"name": "warmup", "epochs": 1, "weights": {"general": 1.0}},
                   {"name": "mixed", "epochs": 2, "weights": {"medical": 0.7, "general": 0.3}}],
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@pytest.mark.parametrize("ratio_by", ["samples", "tokens"])
def test_data_mix_writes_exactly_the_stage_and_hits_the_ratio(tmp_path, tiny_model_dir, ratio_by):
    sources = _big_sources(tmp_path)
    recipe = _recipe(tmp_path, tiny_model_dir, sources, ratio_by=ratio_by)
    out = tmp_path / "mixed.jsonl"
    assert main(["data", "mix", str(recipe), "--out", str(out), "--stage", "mixed"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    manifest = json.loads((tmp_path / "mixed.manifest.json").read_text())
    stage = manifest["stages"][1]
    assert stage["name"] == "mixed" and len(rows) == stage["records"]
    counts = Counter(r["source"] for r in rows)
    assert counts == Counter(stage["samples"])
    share = stage["realized_share_samples"] if ratio_by == "samples" else stage["realized_share_tokens"]
    tolerance = 0.01 if ratio_by == "samples" else 0.02
    assert abs(share["medical"] - 0.7) <= tolerance and abs(share["general"] - 0.3) <= tolerance
    if ratio_by == "samples":
        assert abs(counts["medical"] / len(rows) - 0.7) <= 0.01
    # Normalized records carry provenance back to the file and line they came from.
    first = rows[0]
    assert first["stage"] == "mixed" and first["file"].endswith(".jsonl") and first["line"] >= 1
    assert first["messages"][-1]["role"] == "assistant"
    original = json.loads(sources[first["source"]].read_text().splitlines()[first["line"] - 1])
    expected = original.get("output") or original["conversations"][-1]["value"]
    assert first["messages"][-1]["content"] == expected
    # Medical is the anchor: every training record appears exactly twice over two epochs.
    med = Counter((r["file"], r["line"]) for r in rows if r["source"] == "medical")
    assert set(med.values()) == {2} and len(med) == manifest["sources"]["medical"]["train"]


def test_bad_records_skip_into_rejects_and_counts_add_up(tmp_path, tiny_model_dir):
    good = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(30)]
    bad = ['{"instruction": "broken', {"instruction": "no answer"}, {"instruction": "q", "output": ""},
           {"conversations": [{"from": "gpt", "value": "answer first"}, {"from": "human", "value": "q"}]}]
    medical = write_jsonl(tmp_path / "med.jsonl", good[:10] + bad + good[10:])
    general = write_jsonl(tmp_path / "gen.jsonl", [{"messages": [{"role": "user", "content": f"u{i}"},
                                                                 {"role": "assistant", "content": f"v{i}"}]} for i in range(20)])
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": general}, on_bad_record="skip")
    assert main(["train", str(recipe), "--set", "stages.0.max_steps=1", "--set", "stages.1.max_steps=1"]) == 0
    run = tmp_path / "run"
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [11, 12, 13, 14]
    assert all(r["file"] == str(medical) and r["reason"] and r["raw"] for r in rejects)
    manifest = json.loads((run / "data_manifest.json").read_text())
    med = manifest["sources"]["medical"]
    assert med["read"] == 34 and med["rejected"] == 4 and med["used"] == 30
    assert manifest["totals"]["read"] == manifest["totals"]["used"] + manifest["totals"]["rejected"]


def test_fail_mode_stops_at_the_first_bad_record_with_one_line(tmp_path, tiny_model_dir, capsys):
    medical = write_jsonl(tmp_path / "med.jsonl", [{"instruction": "q", "output": "a"}, '{"instruction": ', {"instruction": "q"}])
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical})
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medsft: error: {medical}:2: malformed JSON") and "\n" not in err
    assert err.endswith("set data.on_bad_record: skip)")  # and how to go on
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained, no model loaded


def test_inspect_reports_lengths_duplicates_and_the_length_gap(tmp_path, tiny_model_dir, capsys):
    medical = write_jsonl(tmp_path / "medical.jsonl",
                          [{"instruction": f"q{i}", "output": "Take rest."} for i in range(10)]
                          + [{"instruction": "q0", "output": "Take rest."}, {"instruction": "q", "output": ""}])
    general = write_jsonl(tmp_path / "general.jsonl",
                          [{"instruction": f"g{i}", "output": "A long and complete answer. " * 4} for i in range(10)])
    assert main(["data", "inspect", str(medical), str(general), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    med = report["sources"]["medical"]
    assert report["unit"] == "characters"
    assert med["records"] == 12 and med["exact_duplicates"] == 1 and med["empty_answers"] == 1
    assert med["answer_length"]["median"] == len("Take rest.")
    assert any("answers in medical are 11.2x shorter than in general" in w for w in report["warnings"])

    assert main(["data", "inspect", str(medical), str(general), "--tokenizer", str(tiny_model_dir),
                 "--max-length", "40"]) == 0
    text = capsys.readouterr().out
    assert "lengths in tokens" in text and "shorter than in general" in text
    assert "do not fit in max_length=40" in text


def test_a_trailing_unanswered_user_turn_is_trimmed_and_counted(tmp_path, tiny_model_dir):
    turns = [{"role": "user", "content": f"q{i}"} if i % 2 == 0 else {"role": "assistant", "content": f"a{i}"}
             for i in range(23)]  # 11 answered exchanges, then a question nobody answered
    medical = write_jsonl(tmp_path / "med.jsonl", [{"messages": turns}] +
                          [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
                           for i in range(30)] +
                          [{"messages": [{"role": "user", "content": "alone"}]}])  # nothing answered: rejected
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical}, on_bad_record="skip")
    out = tmp_path / "mixed.jsonl"
    assert main(["data", "mix", str(recipe), "--out", str(out)]) == 0
    manifest = json.loads((tmp_path / "mixed.manifest.json").read_text())
    med = manifest["sources"]["medical"]
    assert med["trimmed_unanswered_turn"] == 1 and med["read"] == 32 and med["rejected"] == 1
    assert med["read"] == med["used"] + med["rejected"]
    kept = [json.loads(line) for line in out.read_text().splitlines() if json.loads(line)["line"] == 1]
    assert kept and len(kept[0]["messages"]) == 22 and kept[0]["messages"][-1]["role"] == "assistant"


def test_last_assistant_records_lose_early_history_not_their_answer(tmp_path, tiny_model_dir):
    """A long conversation under last_assistant keeps its last exchange (counted in the manifest);
    one whose last exchange alone is too long is rejected with a reason that says so."""
    long_history = [{"role": "user", "content": "tell me " * 30}, {"role": "assistant", "content": "words " * 60},
                    {"role": "user", "content": "and then?"}, {"role": "assistant", "content": "rest."}]
    too_long = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "long " * 200}]
    short = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(30)]
    medical = write_jsonl(tmp_path / "med.jsonl", [{"messages": m} for m in [long_history, too_long] + short])
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical}, on_bad_record="skip",
                     train_on="last_assistant", max_length=64)
    assert main(["data", "mix", str(recipe), "--out", str(tmp_path / "mixed.jsonl")]) == 0
    med = json.loads((tmp_path / "mixed.manifest.json").read_text())["sources"]["medical"]
    assert med["history_truncated_records"] == 1 and med["rejected"] == 1
    assert med["read"] == med["used"] + med["rejected"]
    rejects = [json.loads(line) for line in (tmp_path / "mixed.rejects.jsonl").read_text().splitlines()]
    assert any("even with only its last exchange" in r["reason"] for r in rejects)

    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical}, on_bad_record="skip",
                     train_on="last_assistant", max_length=64, too_long="truncate")
    assert main(["data", "mix", str(recipe), "--out", str(tmp_path / "cut.jsonl")]) == 0
    med = json.loads((tmp_path / "cut.manifest.json").read_text())["sources"]["medical"]
    assert med["answers_truncated"] == 1 and med["rejected"] == 0 and med["read"] == med["used"]


def test_placeholders_are_filled_from_the_recipe_and_inspect_warns_about_them(tmp_path, tiny_model_dir, capsys):
    identity = write_jsonl(tmp_path / "identity.jsonl", [
        {"instruction": "Who are you?", "output": "I am {{name}}, an assistant trained by {{author}}."},
        {"instruction": "你是谁？", "output": "我是{{name}}，由{{author}}训练。"},
        {"instruction": "What is 2+2?", "output": "4"},
    ] * 10)
    assert main(["data", "inspect", str(identity)]) == 0
    assert "identity: 20 records hold {{...}} placeholders" in capsys.readouterr().out

    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": identity, "general": identity})
    tree = yaml.safe_load(recipe.read_text())
    tree["data"]["sources"][0]["replace"] = {"{{name}}": "MedBot", "{{author}}": "City Hospital"}
    recipe.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "mixed.jsonl"
    assert main(["data", "mix", str(recipe), "--out", str(out), "--stage", "mixed"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    medical = [r["messages"][-1]["content"] for r in rows if r["source"] == "medical"]
    assert "I am MedBot, an assistant trained by City Hospital." in medical and "我是MedBot，由City Hospital训练。" in medical
    assert not any("{{" in text for text in medical)
    manifest = json.loads((tmp_path / "mixed.manifest.json").read_text())
    assert manifest["sources"]["medical"]["unreplaced_placeholders"] == 0
    assert manifest["sources"]["general"]["unreplaced_placeholders"] == 20  # no replace for this source


def test_inspect_with_a_tokenizer_says_what_each_max_length_would_drop_or_cut(tmp_path, tiny_model_dir, capsys):
    long_text = "The patient should rest, drink water and see a doctor if the fever lasts. " * 40  # ~3,000 chars
    records = ([{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "Rest."}]}
                for i in range(5)]
               + [{"messages": [{"role": "user", "content": f"long {i}"}, {"role": "assistant", "content": long_text}]}
                  for i in range(5)]
               + [{"messages": [{"role": "user", "content": f"m{i}"}, {"role": "assistant", "content": "Short."},
                                {"role": "user", "content": "More?"}, {"role": "assistant", "content": long_text}]}
                  for i in range(5)])
    data = write_jsonl(tmp_path / "mixed.jsonl", records)
    assert main(["data", "inspect", str(data), "--tokenizer", str(tiny_model_dir), "--template", "chatml",
                 "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["sources"]["mixed"]["max_length_fit"]
    assert fit["256"] == {"dropped": round(5 / 15, 4), "cut": round(5 / 15, 4)}
    assert fit["4096"] == {"dropped": 0.0, "cut": 0.0}
    drops = [fit[k]["dropped"] for k in ("256", "512", "1024", "2048", "4096")]
    assert drops == sorted(drops, reverse=True)
    assert main(["data", "inspect", str(data), "--tokenizer", str(tiny_model_dir), "--template", "chatml"]) == 0
    assert "records left out / cut at each max_length" in capsys.readouterr().out


def test_preview_shows_records_as_trained_with_the_supervised_spans_marked(tmp_path, tiny_model_dir, capsys):
    medical = write_jsonl(tmp_path / "med.jsonl", [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(5)])
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical})
    assert main(["data", "preview", str(recipe), "--n", "2", "--source", "medical"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== medical · ") == 2 and "supervised ===" in out
    assert "[[answer 0<|im_end|>]]" in out and "[[question" not in out and "<|im_start|>user" in out
    assert main(["data", "preview", str(recipe), "--source", "nope"]) == 2
    assert "--source: no source 'nope'" in capsys.readouterr().err
    long = write_jsonl(tmp_path / "long.jsonl", [
        {"messages": [{"role": "user", "content": "why " * 200}, {"role": "assistant", "content": "because"}]}]
        + [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
           for i in range(5)])
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": long, "general": medical}, max_length=96)
    assert main(["data", "preview", str(recipe), "--n", "2", "--source", "medical"]) == 0
    out = capsys.readouterr().out
    assert "long.jsonl:1 · 0 tokens, 0 supervised ===\n(left out: longer than data.max_length=96 tokens" in out


def test_preview_shows_an_openai_tool_call_supervised(tmp_path, tiny_model_dir, capsys):
    """The outside review's record: the call (content null, "" or text beside it) is trained, not dropped."""
    call = {"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    medical = write_jsonl(tmp_path / "tools.jsonl", [
        {"messages": [{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "content": content, "tool_calls": [call]},
                      {"role": "tool", "content": "18 C", "tool_call_id": "c1"},
                      {"role": "assistant", "content": "18 C in Paris."}]}
        for content in ("", None, "Let me check.")])
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical})
    assert main(["data", "preview", str(recipe), "--n", "3", "--source", "medical"]) == 0
    out = capsys.readouterr().out
    block = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>]]'
    assert out.count("[[" + block) == 2 and out.count("[[Let me check.\n" + block) == 1
    assert out.count("[[18 C in Paris.<|im_end|>]]") == 3


def test_a_fixed_dev_set_is_validation_only_and_a_train_split_holds_nothing_out(tmp_path, tiny_model_dir, capsys):
    def records(tag, n):
        return [{"messages": [{"role": "user", "content": f"{tag} q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
                for i in range(n)]

    train_file = write_jsonl(tmp_path / "train.jsonl", records("train", 40))
    dev_file = write_jsonl(tmp_path / "dev.jsonl", records("dev", 7))
    tree = {"model": {"name_or_path": str(tiny_model_dir), "template": "qwen"},
            "data": {"sources": [{"name": "medical", "path": str(train_file), "split": "train"},
                                 {"name": "dev", "path": str(dev_file), "split": "validation"}],
                     "val_fraction": 0.2},
            "output_dir": str(tmp_path / "run")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    assert main(["data", "mix", str(path), "--out", str(tmp_path / "mixed.jsonl")]) == 0
    sources = json.loads((tmp_path / "mixed.manifest.json").read_text())["sources"]
    assert (sources["medical"]["train"], sources["medical"]["validation"]) == (40, 0)
    assert (sources["dev"]["train"], sources["dev"]["validation"]) == (0, 7)
    mixed = [json.loads(line) for line in (tmp_path / "mixed.jsonl").read_text().splitlines()]
    assert len(mixed) == 40 and all(r["source"] == "medical" for r in mixed)

    tree["stages"] = [{"name": "sft", "weights": {"medical": 0.5, "dev": 0.5}}]
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    assert main(["data", "mix", str(path), "--out", str(tmp_path / "again.jsonl")]) == 2
    assert "'dev' is a validation set (split: validation)" in capsys.readouterr().err


def test_max_samples_reads_only_the_first_usable_records(tmp_path, tiny_model_dir):
    good = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(20)]
    lines = good[:3] + ["{not json"] + good[3:12] + ["{also bad"] + good[12:]  # bad at lines 4 and 14
    medical = write_jsonl(tmp_path / "med.jsonl", lines)
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": medical}, on_bad_record="skip")
    tree = yaml.safe_load(recipe.read_text())
    tree["data"]["sources"][0]["max_samples"] = 8
    recipe.write_text(yaml.safe_dump(tree), encoding="utf-8")
    assert main(["data", "mix", str(recipe), "--out", str(tmp_path / "mixed.jsonl")]) == 0
    sources = json.loads((tmp_path / "mixed.manifest.json").read_text())["sources"]
    med = sources["medical"]
    assert med["used"] == 8 and med["malformed"] == 1 and med["read"] == 9  # the second bad line was never reached
    assert med["not_read_max_samples"] == 13 and med["read"] == med["used"] + med["rejected"]
    assert sources["general"]["used"] == 20 and sources["general"]["not_read_max_samples"] == 0


def test_data_mix_writes_only_what_a_capped_stage_trains_on(tmp_path, tiny_model_dir, capsys):
    sources = _big_sources(tmp_path, n_medical=300, n_general=150)
    recipe = _recipe(tmp_path, tiny_model_dir, sources)
    out = tmp_path / "mixed.jsonl"
    assert main(["data", "mix", str(recipe), "--out", str(out), "--stage", "mixed"]) == 0
    whole = [json.loads(line) for line in out.read_text().splitlines()]
    assert main(["data", "mix", str(recipe), "--out", str(out), "--stage", "mixed", "--set", "stages.1.max_steps=3",
                 "--set", "train.batch_size=4", "--set", "train.grad_accum=2"]) == 0
    capped = [json.loads(line) for line in out.read_text().splitlines()]
    assert capped == whole[:24]  # 3 steps x 4 x 2: the first records of the same order
    assert f"the first 24 of {len(whole)} planned records (max_steps 3)" in capsys.readouterr().out


def test_a_source_no_stage_names_is_said_to_be_untrained(tmp_path, tiny_model_dir, capsys):
    sources = _big_sources(tmp_path, n_medical=100, n_general=50)
    recipe = _recipe(tmp_path, tiny_model_dir, sources)
    overrides = ["--set", "stages=[{name: only, weights: {medical: 1.0}}]"]
    assert main(["data", "mix", str(recipe), "--out", str(tmp_path / "m.jsonl"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "warning: general: in no stage's weights, so none of its" in out
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert manifest["sources"]["general"]["in_no_stage"] and "in_no_stage" not in manifest["sources"]["medical"]
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rows} == {"medical"}


def test_a_too_long_reject_keeps_the_record_as_its_file_has_it(tmp_path, tiny_model_dir):
    """Like a malformed record's, a too-long record's reject holds the file's own text (here the ShareGPT
    line, extra keys and all), with its file and line, so it can be fixed and fed again."""
    short = [json.dumps({"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]})
             for i in range(30)]
    long_line = json.dumps({"id": "case-7", "conversations": [{"from": "human", "value": "Explain, please."},
                                                                {"from": "gpt", "value": "long " * 200}]})
    medical = write_jsonl(tmp_path / "med.jsonl", short[:5] + [long_line] + short[5:])
    pretty = tmp_path / "general.json"  # a JSON array over many lines: the element's own text, from its line
    pretty.write_text(json.dumps([json.loads(line) for line in short[:20]] + [json.loads(long_line)], indent=2))
    recipe = _recipe(tmp_path, tiny_model_dir, {"medical": medical, "general": pretty}, max_length=64)
    assert main(["data", "mix", str(recipe), "--out", str(tmp_path / "mixed.jsonl")]) == 0
    rejects = [json.loads(line) for line in (tmp_path / "mixed.rejects.jsonl").read_text().splitlines()]
    text = pretty.read_text()
    start, end = text.index('{\n    "id": "case-7"'), text.rindex("}") + 1  # the last element, braces included
    assert [(r["file"], r["line"]) for r in rejects] == [(str(medical), 6), (str(pretty), text[:start].count("\n") + 1)]
    assert all(r["reason"].startswith("longer than max_length=64") for r in rejects)
    assert rejects[0]["raw"] == long_line
    assert rejects[1]["raw"] == text[start:end]


def test_inspect_table_and_warnings_count_the_same_cut_records(tmp_path, tiny_model_dir, capsys):
    """The outside review's case: at 256 tokens every general record of the sample is left out and none is cut,
    so no warning may speak of later answers dropped; at every length the table's shares are the warnings'
    counts over the records, and the length asked about gets its own column."""
    from sample_data import sample_sources

    files = [s["path"] for s in sample_sources(tmp_path / "data")]
    command = ["data", "inspect", *files, "--tokenizer", str(tiny_model_dir)]
    for limit in (256, 512, 1000, 1024, 2048, 4096):
        assert main(command + ["--max-length", str(limit), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        for name, s in report["sources"].items():
            fit = s["max_length_fit"][str(limit)]
            assert fit == {"dropped": round(s["too_long"] / s["usable"], 4),
                           "cut": round(s["records_cut"] / s["usable"], 4)}, (limit, name)
            assert (s["records_cut"] > 0) == (s["answers_cut"] > 0) and s["answers_cut"] >= s["records_cut"]
            cut_warnings = [w for w in report["warnings"] if w.startswith(f"{name}: ") and "later answers" in w]
            assert cut_warnings == ([f"{name}: {s['records_cut']} records would be cut to fit max_length={limit}, "
                                     f"losing {s['answers_cut']} later answers"] if s["records_cut"] else [])
        general = report["sources"]["general"]
        if limit == 256:
            assert general["too_long"] == general["usable"] == 32 and general["records_cut"] == 0
        if limit == 1000:
            assert general["records_cut"] > 0
    assert main(command + ["--max-length", "1000"]) == 0
    table = capsys.readouterr().out
    assert "           256           512          1000          1024" in table


def test_a_stage_with_no_records_is_one_line_naming_why_before_training(tmp_path, tiny_model_dir, capsys):
    sources = _big_sources(tmp_path, n_medical=100, n_general=50)
    recipe = _recipe(tmp_path, tiny_model_dir, sources)
    assert main(["train", str(recipe), "--set", "data.max_length=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no usable training records" in err and "longer than max_length=16 and left out" in err
    assert main(["train", str(recipe), "--set", "stages.1.epochs=0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stages: 'mixed' takes no records (epochs 0.001" in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing trained or written
