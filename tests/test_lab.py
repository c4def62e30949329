"""The forgetting lab: its world, its cached base model, and one tiny run end to end."""

from __future__ import annotations

import json
import statistics

import pytest

from medsft.errors import UserError
from medsft.lab.base import BaseConfig, build_base
from medsft.lab.world import build_world

TINY_BASE = BaseConfig(vocab_size=400, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                       intermediate_size=64, epochs=1, batch_size=32)
TINY_WORLD = {"n_diseases": 12, "per_family": 20, "probes_per_family": 4, "probe_facts": 12, "medical_repeats": 1}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_world_is_deterministic_and_held_out(language):
    world = build_world(3, language)
    assert build_world(3, language).texts() == world.texts()
    assert build_world(4, language).texts() != world.texts()
    assert len(world.diseases) >= 40 and all(len(d) >= 4 for d in world.diseases)
    families = {i.family for i in world.general_train}
    assert len(families) >= 4
    general_text = " ".join(i.question + " " + i.answer for i in world.general_train + world.general_probes)
    for disease in world.diseases:  # fictional medicine never appears in general data
        assert disease["disease"] not in general_text and disease["drug"] not in general_text
    trained_questions = {i.question for i in world.medical_train}
    assert all(p.question in trained_questions for p in world.medical_trained_probes)
    assert not any(p.question in trained_questions for p in world.medical_paraphrase_probes)
    assert [p.key for p in world.medical_paraphrase_probes] == [p.key for p in world.medical_trained_probes]
    general_questions = {i.question for i in world.general_train}
    assert not any(p.question in general_questions for p in world.general_probes)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_world_answers_are_long_for_general_and_terse_for_medicine(tmp_path, language):
    from medsft.lab.tiny import build_tokenizer

    world = build_world(0, language)
    tokenizer = build_tokenizer(world.texts(), tmp_path / "tok", vocab_size=1024)
    general = statistics.median(len(tokenizer(i.answer)["input_ids"]) for i in world.general_train)
    medical = statistics.median(len(tokenizer(i.answer)["input_ids"]) for i in world.medical_train)
    assert general >= 40 and medical <= general / 3


def test_base_is_built_once_and_rebuilt_when_the_config_changes(tmp_path, monkeypatch):
    world = build_world(0, "en", **TINY_WORLD)
    first = build_base(world, TINY_BASE, tmp_path, log=lambda *_: None)
    assert (first / "model.safetensors").exists() and (first / "tokenizer.json").exists()

    import medsft.lab.base as run

    def no_training(*args, **kwargs):
        raise AssertionError("the cached base should have been reused")

    monkeypatch.setattr(run, "train", no_training)
    assert build_base(world, TINY_BASE, tmp_path, log=lambda *_: None) == first
    same = BaseConfig(**{**TINY_BASE.__dict__, "epochs": float(TINY_BASE.epochs)})  # 1 and 1.0: one base
    assert build_base(world, same, tmp_path, log=lambda *_: None) == first
    with pytest.raises(AssertionError, match="reused"):
        build_base(world, BaseConfig(**{**TINY_BASE.__dict__, "epochs": 2}), tmp_path, log=lambda *_: None)
    with pytest.raises(AssertionError, match="reused"):
        build_base(build_world(1, "en", **TINY_WORLD), TINY_BASE, tmp_path, log=lambda *_: None)


def test_tiny_lab_end_to_end(tmp_path):
    from medsft.lab.runner import run_lab

    own = tmp_path / "my-recipe.yaml"  # any recipe runs as a variant on the lab's base and world
    own.write_text("finetune: {method: lora, lora: {rank: 2, alpha: 4}}\n"
                   "data: {sources: [{name: medical, path: x}, {name: general, path: y}]}\n"
                   "stages: [{name: half, epochs: 1, weights: {medical: 0.5, general: 0.5}}]\n")
    results = run_lab(["base", "domain-only", "mix-7-3", str(own)], seeds=2, out=tmp_path / "lab",
                      cache_dir=tmp_path / "cache", base_config=TINY_BASE, world_size=TINY_WORLD, log=lambda *_: None)
    saved = json.loads((tmp_path / "lab" / "results.json").read_text())
    assert set(saved["variants"]) == {"base", "domain-only", "mix-7-3", "my-recipe"}
    manifest = json.loads((tmp_path / "lab" / "runs" / "my-recipe" / "seed-0" / "data_manifest.json").read_text())
    assert manifest["stages"][0]["asked_share"] == {"medical": 0.5, "general": 0.5}
    for name in saved["variants"]:
        for metric in ["general_accuracy", "length_ratio", "domain_accuracy", "paraphrase_accuracy",
                       "transfer_accuracy"]:
            entry = saved["variants"][name][metric]
            assert entry["mean"] is not None and len(entry["values"]) == 2
    assert saved["variants"]["base"]["length_ratio"]["mean"] == 1.0
    assert saved["variants"]["domain-only"]["eval_loss_medical"]["mean"] > 0
    table = (tmp_path / "lab" / "results.md").read_text()
    assert "| mix-7-3 |" in table and "general_accuracy" in table
    assert {p.split("/")[-1] for p in results["plots"]} >= {"general_accuracy.png", "length_ratio.png"}
    assert saved["variants"]["domain-only"]["kl_to_base"]["mean"] > 0  # measured by the monitor during the run
    assert saved["variants"]["base"]["kl_to_base"]["mean"] == 0.0
    assert (tmp_path / "lab" / "report.html").read_text().count("data:image/png;base64,") == len(results["plots"])
    # Same seed, same numbers: the two seeds of a variant come from separate trainings.
    again = run_lab(["domain-only"], seeds=1, out=tmp_path / "again", cache_dir=tmp_path / "cache",
                    base_config=TINY_BASE, world_size=TINY_WORLD, log=lambda *_: None)
    first_seed = saved["runs"]["domain-only"][0]
    repeat = again["runs"]["domain-only"][0]
    for metric in ["general_accuracy", "domain_accuracy", "paraphrase_accuracy", "eval_loss_medical"]:
        assert first_seed[metric] == repeat[metric]


def test_the_augmented_variant_trains_on_augmented_medical_records(tmp_path):
    from medsft.lab.runner import run_lab

    results = run_lab(["augmented"], seeds=1, out=tmp_path / "lab", cache_dir=tmp_path / "cache",
                      base_config=TINY_BASE, world_size=TINY_WORLD, log=lambda *_: None)
    manifest = json.loads((tmp_path / "lab" / "runs" / "augmented" / "seed-0" / "data_manifest.json").read_text())
    medical = manifest["sources"]["medical"]
    assert medical["augmented_used"] > medical["used"] / 5  # the world repeats each record; rewrites are unique
    assert set(medical["augmentation"]["per_augmenter"]) == {"rephrase", "restate", "synonyms", "statements",
                                                             "multiturn", "shuffle"}
    assert all(counts["kept"] > 0 for counts in medical["augmentation"]["per_augmenter"].values())
    assert medical["read"] == medical["used"] + medical["rejected"]
    assert results["variants"]["augmented"]["paraphrase_accuracy"]["mean"] is not None


def test_the_remedy_variants_set_their_remedy_and_scaled_runs_tune_scale(tmp_path):
    from medsft.lab.real import SYNTHETIC
    from medsft.lab.runner import run_lab
    from medsft.lab.variants import VARIANTS, LabContext
    from medsft.recipe import parse_recipe

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    files = {"medical": tmp_path / "m.jsonl", "general": tmp_path / "g.jsonl", "general_probes": tmp_path / "p.jsonl"}
    context = LabContext(base, files, tmp_path / "lab", SYNTHETIC)
    trees = {name: VARIANTS[name](context, name, 0)
             for name in ["kl-replay", "on-policy", "self-distill", "frozen-lower", "scaled", "adaptive", "medsft-default"]}
    assert trees["kl-replay"]["train"]["kl_to_base"] > 0 and trees["kl-replay"]["train"]["kl_on"] == "general"
    assert trees["on-policy"]["train"]["on_policy"]["every"] == 40
    assert trees["self-distill"]["data"]["sources"][1]["self_distill"]["mode"] == "replace"
    assert trees["frozen-lower"]["finetune"]["layers"] == "2-"
    assert trees["adaptive"]["stages"][0]["adaptive"]["general_share"] == [0.2, 0.6]
    assert trees["scaled"].pop("_then") == "tune-scale"
    # medsft-default is what `medsft init` writes: augmented medical data, 6:4, the adaptive mix.
    default = trees["medsft-default"]
    assert default["data"]["sources"][0]["augment"]["per_record"] == 8
    assert default["stages"][0]["weights"] == {"medical": 0.6, "general": 0.4}
    assert default["stages"][0]["adaptive"]["general_share"] == [0.4, 0.5]
    assert default["stages"][0]["epochs"] == 4 and default["stages"][0]["anchor"] == "medical"
    # Any ratio: 3 passes over the medical source whatever the ratio (more general data adds steps).
    from medsft.lab.variants import find_variant, recipe_variant

    half = find_variant("augmented-mix-5-5")[0](context, "augmented-mix-5-5", 0)
    assert half["stages"][0]["weights"] == {"medical": 0.5, "general": 0.5}
    assert half["stages"][0]["anchor"] == "medical" and half["stages"][0]["epochs"] == 3
    assert half["data"]["sources"][0]["augment"]["per_record"] == 8
    trees["mix-3-7"] = find_variant("mix-3-7")[0](context, "mix-3-7", 0)
    assert trees["mix-3-7"]["stages"][0]["anchor"] == "medical" and "augment" not in trees["mix-3-7"]["data"]["sources"][0]
    assert find_variant("mix-a-3") is None
    # A recipe file as a variant keeps its sources' own settings and its monitor cadence; the lab's probes stay.
    own = tmp_path / "own.yaml"
    own.write_text("data: {sources: [{name: medical, path: m.jsonl, augment: {augmenters: [rephrase]}},\n"
                   "                 {name: general, path: g.jsonl, self_distill: true}]}\n"
                   "stages: [{name: s, epochs: 1, weights: {medical: 0.5, general: 0.5},\n"
                   "          adaptive: {general_share: [0.4, 0.6]}}]\n"
                   "monitor: {eval_every: 7, general_probes: [builtin], select: {enabled: true}}\n")
    trees["own"] = recipe_variant(own)(context, "own", 0)
    assert trees["own"]["data"]["sources"][0]["augment"] == {"augmenters": ["rephrase"]}
    assert trees["own"]["data"]["sources"][1]["self_distill"] is True
    assert str(trees["own"]["data"]["sources"][0]["path"]) == str(files["medical"])
    assert trees["own"]["monitor"]["eval_every"] == 7
    assert trees["own"]["monitor"]["general_probes"] == [str(files["general_probes"])]
    assert trees["own"]["monitor"]["select"]["enabled"] is False
    own.write_text("data: {sources: [{name: medical, path: m.jsonl}, {name: pubmed, path: p.jsonl}]}\n")
    with pytest.raises(UserError, match="only on the sources"):
        recipe_variant(own)(context, "own", 0)
    for name, tree in trees.items():
        parse_recipe(tree, name)  # every variant is a valid recipe

    results = run_lab(["scaled"], seeds=1, out=tmp_path / "run", cache_dir=tmp_path / "cache", base_config=TINY_BASE,
                      world_size=TINY_WORLD, log=lambda *_: None)
    scale = results["runs"]["scaled"][0]["adapter_scale"]
    assert scale in (0.25, 0.5, 0.75, 1.0)
    assert json.loads((tmp_path / "run" / "runs" / "scaled" / "seed-0" / "tune_scale.json").read_text())["chosen"] == scale


@pytest.mark.slow
def test_tiny_lab_runs_in_chinese(tmp_path):
    from medsft.lab.runner import run_lab

    results = run_lab(["base", "mix-7-3"], seeds=1, out=tmp_path / "lab", cache_dir=tmp_path / "cache",
                      language="zh", base_config=TINY_BASE, world_size=TINY_WORLD, log=lambda *_: None)
    assert results["language"] == "zh"
    sample = results["runs"]["mix-7-3"][0]["samples"]["general"][0]["question"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in sample)
    assert results["variants"]["mix-7-3"]["general_accuracy"]["mean"] is not None


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_model_that_knows_only_the_trained_phrasings_scores_as_trained_and_nothing_else(language, monkeypatch):
    """Memorized strings, not knowledge: the lab's metrics must tell the two apart."""
    import medsft.eval.evaluate as evaluation
    from medsft.eval.generate import Generated
    from medsft.lab.runner import _score, probe_sets

    world = build_world(0, language)
    memorized = {item.question: item.answer for item in world.medical_train + world.general_train}

    def parrot(model, chat, questions, max_new_tokens=128, batch_size=32, label=None):
        return [Generated(memorized.get(q, "I do not know."), 4, True) for q in questions]

    monkeypatch.setattr(evaluation, "generate", parrot)
    scores = _score(None, None, probe_sets(world))
    assert scores["domain_accuracy"] == 1.0  # every fact asked exactly as trained
    assert scores["paraphrase_accuracy"] == 0.0  # the same facts in other words
    assert scores["transfer_accuracy"] == 0.0  # facts it read only in passages


def test_transfer_facts_appear_only_in_passages():
    world = build_world(0, "en", n_diseases=20, probe_facts=40, medical_repeats=1)
    transfer = {d["disease"] for d in world.diseases if not d["qa"]}
    assert len(transfer) == 10
    passages = [i for i in world.medical_train if i.family == "medical_passage"]
    qa = [i for i in world.medical_train if i.family != "medical_passage"]
    assert len(passages) == 2 * 20  # every disease has its passage, under two prompts
    assert not any(d in item.question for d in transfer for item in qa)  # never asked as QA
    for probe in world.medical_transfer_probes:
        disease = next(d for d in world.diseases if d["disease"] in probe.question or d["drug"] in probe.question)
        assert not disease["qa"]
        passage = next(p.answer for p in passages if disease["disease"] in p.question)
        assert probe.key in passage  # the fact is there to be learned, in other words


def test_open_general_prompts_are_held_out_and_answered_in_the_base_models_own_words(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medsft.data.templates import get_template
    from medsft.eval.builtin import general_probes
    from medsft.eval.generate import Chat
    from medsft.lab.open_general import FAMILY, open_general, open_prompts

    prompts = open_prompts()
    assert len(set(prompts)) == len(prompts) >= 150
    assert not set(prompts) & {p.question for p in general_probes("en")}  # the probes stay unseen

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    chat = Chat(tokenizer, get_template("chatml", tokenizer))

    def answer(budget: int) -> list:
        return open_general(model, chat, tiny_model_dir, tmp_path, max_new_tokens=budget, batch_size=64,
                            log=lambda *_: None)

    items = answer(6)
    [cache] = tmp_path.glob("open-general-*.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["question"] for r in rows] == prompts
    finished = [(r["question"], r["answer"]) for r in rows if r["stopped"] and r["answer"]]
    assert [(i.question, i.answer) for i in items] == finished and all(i.family == FAMILY for i in items)
    stamp = cache.stat().st_mtime_ns
    assert answer(6) == items and cache.stat().st_mtime_ns == stamp  # read from the cache, not generated again
    answer(7)
    assert len(list(tmp_path.glob("open-general-*.jsonl"))) == 2  # another budget, another cache file


def test_a_lab_base_with_open_general_trains_on_its_own_answers(tmp_path, monkeypatch):
    """The runner adds the base's finished open-ended answers to the general file every variant reads."""
    import dataclasses

    import medsft.lab.runner as runner
    from medsft.lab.open_general import open_prompts

    monkeypatch.setitem(runner.BASES, "synthetic", dataclasses.replace(runner.SYNTHETIC, open_general=True))
    results = runner.run_lab(["base"], seeds=1, out=tmp_path / "lab", cache_dir=tmp_path / "cache",
                             base_config=TINY_BASE, world_size=TINY_WORLD, log=lambda *_: None)
    [cache] = (tmp_path / "cache").glob("open-general-*.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["question"] for r in rows] == open_prompts()  # answered by the lab's base
    closed = [i.to_alpaca() for i in build_world(0, "en", **TINY_WORLD).general_train]
    general = [json.loads(line) for line in (tmp_path / "lab" / "world" / "general.jsonl").read_text().splitlines()]
    own = [{"instruction": r["question"], "input": "", "output": r["answer"]}
           for r in rows if r["stopped"] and r["answer"]]
    assert general == closed + own and results["world"]["general_train"] == len(closed) + len(own)


def test_a_variant_recipes_errors_come_before_the_base_is_built(tmp_path, monkeypatch):
    import medsft.lab.runner as runner

    def no_build(*args, **kwargs):
        raise AssertionError("the base model was built before the variants were checked")

    monkeypatch.setattr(runner, "build_base", no_build)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train: {learning_rat: 1}\n")
    with pytest.raises(UserError, match=r"typo\.yaml: train\.learning_rat: unknown field"):
        runner.run_lab(["base", str(typo)], out=tmp_path / "lab", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=r"missing\.yaml: no such recipe file"):
        runner.run_lab([str(tmp_path / "missing.yaml")], out=tmp_path / "lab", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=r"stages\.0\.weights"):
        (tmp_path / "ratio.yaml").write_text("stages: [{name: s, weights: {medical: -1}}]\n")
        runner.run_lab([str(tmp_path / "ratio.yaml")], out=tmp_path / "lab", cache_dir=tmp_path / "cache")
    # a recipe that parses goes on to build the base
    (tmp_path / "fine.yaml").write_text("train: {learning_rate: 0.001}\nstages: [{name: s, weights: {medical: 1}}]\n")
    with pytest.raises(AssertionError, match="base model was built"):
        runner.run_lab(["base", str(tmp_path / "fine.yaml")], out=tmp_path / "lab", cache_dir=tmp_path / "cache")


def test_an_empty_variant_list_is_one_line(tmp_path, capsys):
    from medsft.cli import main

    assert main(["lab", "--variants", ",", "--out", str(tmp_path / "lab"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "--variants: no variant named" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing built


def test_a_ratio_variant_without_a_medical_share_says_why():
    from medsft.lab.variants import find_variant

    with pytest.raises(UserError, match="mix-0-10: the medical share must be above 0"):
        find_variant("mix-0-10")
    assert find_variant("mix-1-9") is not None and find_variant("mix-a-b") is None
