"""train.on_policy: KL(tuned || base) on answers the tuned model gives itself, drawn again every N steps."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from medsft.cli import main
from run_checks import small_recipe
from test_resume import _killed_run, _same_as_uninterrupted


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4))


def _answers_batch():
    """Two right-padded sequences; the answer is tokens 4-8 of the first and 3-5 of the second."""
    input_ids = torch.randint(1, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    answer_mask = torch.zeros(2, 9, dtype=torch.bool)
    answer_mask[0, 4:9] = True
    answer_mask[1, 3:6] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}


def test_on_policy_kl_is_the_reverse_kl_over_answer_tokens_only():
    from medsft.models import add_lora
    from medsft.train.loss import on_policy_kl_sum

    base = _tiny_llama()
    reference = copy.deepcopy(base).eval()
    lora = add_lora(copy.deepcopy(base), rank=4, alpha=8, dropout=0.0)
    batch = _answers_batch()
    kl, tokens = (t.detach() for t in on_policy_kl_sum(lora, batch))
    assert int(tokens) == 5 + 3  # every answer token, each predicted from the position before it
    assert float(kl) == pytest.approx(0.0, abs=1e-6)  # B = 0 at start: tuned == base
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    kl, tokens = (t.detach() for t in on_policy_kl_sum(lora, batch))
    via_copy = on_policy_kl_sum(lora, batch, reference=reference)[0].detach()
    assert float(kl) > 1e-3 and float(via_copy) == pytest.approx(float(kl), rel=1e-5)

    # By hand: positions 3..7 of row 0 predict tokens 4..8, positions 2..4 of row 1 predict tokens 3..5.
    with torch.no_grad():
        tuned = torch.log_softmax(lora(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
        frozen = torch.log_softmax(reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    rows = [(0, p) for p in range(3, 8)] + [(1, p) for p in range(2, 5)]
    expected = sum(float((tuned[r, p].exp() * (tuned[r, p] - frozen[r, p])).sum()) for r, p in rows)
    assert float(kl) == pytest.approx(expected, rel=1e-4)
    assert int(tokens) == len(rows)
    # The head applied at the answer positions only gives the same sum, and the head sees only those.
    rows_seen = []
    for net in (lora, reference):
        net.get_output_embeddings().register_forward_hook(lambda _, args, __: rows_seen.append(args[0].shape[:-1]))
    for reference_model in (None, reference):
        rows_seen.clear()
        full = on_policy_kl_sum(lora, batch, reference_model)[0].detach()
        assert rows_seen == [(2, 9), (2, 9)]  # tuned and base: every position of both rows
        rows_seen.clear()
        through_head = on_policy_kl_sum(lora, batch, reference_model, through_head=True)[0].detach()
        # the answer-predicting positions only (the model's own forward applies it to none: logits_to_keep)
        assert [r for r in rows_seen if r.numel()] == [(len(rows),), (len(rows),)]
        assert float(through_head) == pytest.approx(float(full), rel=1e-5)


def test_the_kl_terms_compare_forwards_without_neftune_noise():
    """NEFTune's hook noises the input embeddings while they train, each forward its own draw: the KL
    terms run theirs without it, so a tuned model equal to the base still reads 0 (noise would not)."""
    from transformers.integrations.neftune import neftune_post_forward_hook

    from medsft.models import add_lora
    from medsft.train.loss import kl_to_base_sum, on_policy_kl_sum

    lora = add_lora(_tiny_llama(), rank=4, alpha=8, dropout=0.0).train()  # B = 0: tuned == base
    batch = _answers_batch()
    embeddings = lora.get_input_embeddings()
    embeddings.neftune_noise_alpha = 500.0
    embeddings.register_forward_hook(neftune_post_forward_hook)
    forward = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    noisy = lora(**forward).logits
    assert not torch.allclose(noisy, lora(**forward).logits, atol=1e-4)  # the hook does noise each forward
    assert float(on_policy_kl_sum(lora, batch)[0].detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        embeddings.eval()
        clean = lora(**forward).logits[:, :-1].float()
        embeddings.train()
    positions = batch["answer_mask"][:, 1:]
    assert float(kl_to_base_sum(lora, batch, clean, positions)) == pytest.approx(0.0, abs=1e-6)
    assert embeddings.training  # the noise is back for the training forward


def _on_policy_recipe(folder, model_dir, weight: float = 1.0, logging_steps: int = 1, **settings):
    return small_recipe(folder, model_dir, "run", dropout=0.0, logging_steps=logging_steps,
                        on_policy={"weight": weight, "every": 4, "prompts": 6, "per_batch": 2, "max_new_tokens": 8,
                                   "batch_size": 4, **settings})


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def on_policy_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("on-policy")
    lines: list[str] = []
    from medsft.pipeline.run import train
    from medsft.recipe import load_recipe

    train(load_recipe(_on_policy_recipe(folder, tiny_model_dir)), log=lines.append)
    return folder / "run", lines


def test_the_tuned_model_answers_a_fresh_draw_every_n_steps_and_the_term_is_logged(on_policy_run):
    run_dir, lines = on_policy_run
    draws = [line for line in lines if line.startswith("train.on_policy: draw")]
    assert [d.split()[2] for d in draws] == ["0:", "1:", "2:"]  # steps 0, 4 and 8 of 12
    assert all("answered 6 general prompts" in d for d in draws)
    logged = [e["train_on_policy_kl"] for e in _events(run_dir) if "train_on_policy_kl" in e]
    assert len(logged) == 12  # one per logged step
    assert logged[0] == pytest.approx(0.0, abs=1e-6) and max(logged) > 1e-4  # drift grows from zero (B = 0)


def test_on_policy_keeps_the_tuned_models_own_answers_closer_to_the_base(tmp_path, tiny_model_dir):
    """The same run with the term's weight near zero (still measured, hardly trained on) drifts further
    on its own answers than one that trains on it."""
    last = {}
    for weight in (10.0, 1e-6):
        recipe = _on_policy_recipe(tmp_path / str(weight), tiny_model_dir, weight=weight)
        assert main(["train", str(recipe)]) == 0
        logged = [e["train_on_policy_kl"] for e in _events(tmp_path / str(weight) / "run") if "train_on_policy_kl" in e]
        last[weight] = sum(logged[-4:]) / 4
    print(f"KL(tuned || base) on its own answers, mean of the last 4 steps: {last}")
    assert last[10.0] < 0.5 * last[1e-6]


@pytest.fixture(scope="module")
def logged_every_2(tmp_path_factory, tiny_model_dir):
    """The run logging every 2 steps and saving every 3: a checkpoint falls inside a logging window."""
    folder = tmp_path_factory.mktemp("on-policy-log-2")
    assert main(["train", str(_on_policy_recipe(folder, tiny_model_dir, logging_steps=2))]) == 0
    return folder / "run"


@pytest.mark.slow
@pytest.mark.parametrize("at", [5, 11], ids=["killed-after-a-draw-before-its-checkpoint", "killed-in-later-stage"])
def test_a_killed_on_policy_run_resumes_to_the_uninterrupted_end(logged_every_2, tmp_path, tiny_model_dir, at):
    """Killed after step 5 it resumes from checkpoint 3 and draws again at step 4 from the same weights;
    after step 11 it resumes from run-wide step 9 with draw 2's answers restored from the checkpoint. The
    KL summed since the last log (step 2 or 8) comes back from the checkpoint too."""
    recipe = _on_policy_recipe(tmp_path, tiny_model_dir, logging_steps=2)
    _killed_run(tmp_path, recipe, "step", at)
    assert main(["train", str(recipe), "--resume"]) == 0
    _same_as_uninterrupted(tmp_path / "run", logged_every_2)
    kl = [e.get("train_on_policy_kl") for e in _events(tmp_path / "run")]
    assert kl == pytest.approx([e.get("train_on_policy_kl") for e in _events(logged_every_2)], abs=1e-6)


def test_on_policy_trains_full_fine_tuning_against_a_frozen_copy(tmp_path, tiny_model_dir):
    recipe = _on_policy_recipe(tmp_path, tiny_model_dir)
    tree = yaml.safe_load(recipe.read_text())
    tree["finetune"] = {"method": "full"}
    tree["stages"] = tree["stages"][1:]
    tree["monitor"] = {"probes": False}
    recipe.write_text(yaml.safe_dump(tree))
    assert main(["train", str(recipe)]) == 0
    logged = [e["train_on_policy_kl"] for e in _events(tmp_path / "run") if "train_on_policy_kl" in e]
    assert logged[0] == pytest.approx(0.0, abs=1e-6) and max(logged) > 1e-4


def test_on_policy_is_refused_without_general_training_data_or_with_a_sharding_engine(tmp_path, tiny_model_dir, capsys):
    recipe = _on_policy_recipe(tmp_path, tiny_model_dir)
    tree = yaml.safe_load(recipe.read_text())
    tree["data"]["sources"] = tree["data"]["sources"][:1]
    tree["stages"] = None
    recipe.write_text(yaml.safe_dump(tree))
    assert main(["train", str(recipe)]) == 2
    assert "train.on_policy: needs a training source with role: general" in capsys.readouterr().err
    tree = yaml.safe_load(_on_policy_recipe(tmp_path / "fsdp", tiny_model_dir).read_text())
    tree["train"]["fsdp"] = "full_shard"
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(tree))
    assert main(["train", str(tmp_path / "fsdp.yaml")]) == 2
    assert "train.on_policy with train.deepspeed / train.fsdp" in capsys.readouterr().err
