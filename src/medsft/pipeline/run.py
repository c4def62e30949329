"""`medsft train`: recipe -> run directory. `train` reads as the list of steps a run takes."""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import transformers

from medsft import distributed
from medsft.data.mixture import AdaptiveOrder, group_by_length
from medsft.data.prepare import trained_mix, write_jsonl, write_rejects
from medsft.errors import UserError
from medsft.eval.generate import Chat, prompt_before_answer
from medsft.eval.sets import probe_sets
from medsft.models import (LIGER_EXTRA, add_lora, apply_liger_kernels, check_adapter_dir, check_model_fit, choose_dtype,
                           compile_layers, decoder_layers, freeze_layers_outside, layer_indices, liger_model_types,
                           load_adapter, load_model, model_type, use_packed_attention)
from medsft.monitor.monitor import Monitor
from medsft.pipeline.finish import best_so_far, finish_monitor
from medsft.pipeline.onpolicy import OnPolicyAnswers
from medsft.pipeline.prepare import prepare, report_data
from medsft.pipeline.rundir import ResumePoint, claim_run_dir, keep_start, truncate, undo_start
from medsft.pipeline.stages import check_disk_space, records_trained, save_stage_end, stage_trainer
from medsft.report.html import write_report
from medsft.train import checkpoint
from medsft.train.collate import OrderedView
from medsft.train.engines import deepspeed_config, shards_weights
from medsft.train.loss import head_gives_logits
from medsft.train.trainer import StageRun


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bitsandbytes_on_cuda() -> bool:
    """8-bit optimizers and k-bit loading need both (the `gpu` extra on a CUDA machine)."""
    import torch

    return importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available()


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # the trained model (a PeftModel for LoRA), still in memory


def train(recipe, log=print, resume: str | None = None, overwrite: bool = False) -> TrainResult:
    """Run every stage of the recipe and write the run directory.

    resume: None (a fresh run), "yes" (continue from the newest whole checkpoint; there must be one)
    or "auto" (continue if there is one, else start). overwrite: replace a previous run in output_dir.

    Under a multi-process launcher (`--nproc`, torchrun, accelerate launch) every process runs these
    steps; what is written (run directory, caches, probes, report) is written by the main process."""
    distributed.init()
    run = Run(recipe, distributed.quiet(log))
    try:
        run.check_optional_packages()
        run.claim(resume, overwrite)
        try:
            run.prepare_data()  # with the probe files: every user error is raised before the model loads
            run.write_start()
            run.load_model()
            run.check_disk_space()
            run.start_monitor()
            run.start_on_policy()
        except BaseException:
            run.undo_start()  # a fresh run leaves no half-started folder; a replaced run comes back
            raise
        run.keep_start()
        for index in range(len(recipe.resolved_stages)):
            if not run.train_stage(index):
                break
        run.finish()
    except BaseException:
        distributed.close(wait=False)
        raise
    distributed.close()
    return TrainResult(run.run_dir, run.model)


class Run:
    """The state of one `medsft train`, built up step by step."""

    def __init__(self, recipe, log=print):
        self.recipe = recipe
        self.log = log
        self.run_dir = Path(recipe.output_dir)
        self.point: ResumePoint | None = None
        self.started = time.time()
        self.step = 0  # run-wide steps of the stages done so far
        self.trainer = None
        self.model = None
        self.reference = None  # a frozen base copy for the KL terms of full fine-tuning
        self.on_policy = None  # train.on_policy: the tuned model's own answers (pipeline/onpolicy.py)
        self.padding_free = False  # train.padding_free, once the model is known to keep packed samples apart
        self.loss_chunk_tokens = 0  # train.loss_chunk_tokens, once the model is known to allow it
        self.answers_through_head = False  # train.on_policy: the head applied at answer positions only
        self.sharded = False  # ZeRO-3 or FSDP: every process takes part in each forward, probes included

    def check_optional_packages(self) -> None:
        if self.recipe.train.report_to == "tensorboard" and not (
            importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
        ):
            raise UserError("train.report_to: tensorboard is not installed (pip install tensorboard)")
        optim = self.recipe.train.optim
        if ("8bit" in optim or optim.startswith("paged") or optim.startswith("lion")) and not _bitsandbytes_on_cuda():
            raise UserError(f"train.optim: {optim} needs a CUDA GPU and bitsandbytes (pip install 'medsft[gpu]'); "
                            "adamw_torch runs anywhere")
        quantization = self.recipe.model.quantization
        if quantization and self.recipe.finetune.method != "lora":
            raise UserError(f"model.quantization: {quantization} trains a LoRA adapter on frozen quantized weights; "
                            "set finetune.method: lora")
        if quantization and not _bitsandbytes_on_cuda():
            raise UserError(f"model.quantization: {quantization} needs a CUDA GPU and bitsandbytes "
                            "(pip install 'medsft[gpu]')")
        train = self.recipe.train
        if train.liger:
            if importlib.util.find_spec("liger_kernel") is None or not torch_cuda():
                raise UserError(f"train.liger needs a CUDA GPU and liger-kernel ({LIGER_EXTRA}); train.compile fuses "
                                "the same layers without it")
            kind, supported = model_type(self.recipe.model.name_or_path, self.recipe.model.trust_remote_code), liger_model_types()
            if kind is not None and kind not in supported:
                raise UserError(f"train.liger: liger-kernel has no kernels for model type {kind!r}; drop train.liger "
                                "(train.compile fuses the same layers)")
        stages = len(self.recipe.resolved_stages)
        if (train.deepspeed or train.fsdp) and stages > 1:
            engine = "train.deepspeed" if train.deepspeed else "train.fsdp"
            raise UserError(f"{engine}: one stage per run ({stages} here): the engine wraps the model in place and "
                            "a second stage cannot wrap it again; run each stage as its own recipe (the next one "
                            "with finetune.lora.init_from), or train plain data parallel (--nproc)")
        if train.deepspeed is not None:
            if importlib.util.find_spec("deepspeed") is None or not torch_cuda():
                raise UserError("train.deepspeed needs a CUDA GPU and DeepSpeed (pip install 'medsft[deepspeed]'); "
                                "train.fsdp or plain data parallel (--nproc) need neither")
            _, mixed = choose_dtype(self.recipe.model.dtype, self.recipe.finetune.method, engine=True)
            deepspeed_config(train.deepspeed, train, mixed, distributed.world_size())  # the file's errors, now
        if train.fsdp is not None and not torch_cuda():
            raise UserError("train.fsdp needs CUDA GPUs (on CPU the Trainer would quietly train plain data parallel "
                            "instead); --nproc N without train.fsdp trains data parallel on CPU")
        if (train.deepspeed or train.fsdp) and quantization:
            raise UserError("model.quantization: k-bit weights do not shard; drop train.deepspeed / train.fsdp "
                            "or the quantization")
        self.sharded = shards_weights(train)  # each process holds part of the weights (ZeRO-3, FSDP)
        if self.recipe.model.attn_implementation == "flash_attention_2" and (
                importlib.util.find_spec("flash_attn") is None or not torch_cuda()):
            raise UserError("model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package "
                            "(pip install flash-attn); sdpa runs anywhere, and padding-free batches use torch's own "
                            "variable-length FlashAttention on a GPU without it")
        init_from = self.recipe.finetune.lora.init_from
        lora = self.recipe.finetune.method == "lora"
        if init_from and lora:
            check_adapter_dir(init_from, "finetune.lora.init_from")
        model, finetune = self.recipe.model, self.recipe.finetune
        check_model_fit(model.name_or_path, model.trust_remote_code, model.rope_scaling,  # on a weightless copy
                        finetune.lora.model_dump(exclude={"init_from"}) if lora and not init_from else None,
                        finetune.layers if not (lora and init_from) else None)

    def claim(self, resume: str | None, overwrite: bool) -> None:
        self.point = distributed.on_main(claim_run_dir, self.recipe, self.run_dir, resume, overwrite, self.log)
        self.started = time.time() - (self.point.state.get("run_seconds", 0.0) if self.point else 0.0)

    def undo_start(self) -> None:
        if self.point is None:
            distributed.on_main(undo_start, self.run_dir)

    def keep_start(self) -> None:
        if self.point is None:
            distributed.on_main(keep_start, self.run_dir)

    def prepare_data(self) -> None:
        # The main process prepares first (caches of encodings, augmentations, self-distilled answers), the others read them.
        self.tokenizer, self.template, self.prepared = distributed.main_first(prepare, self.recipe, self.log)
        roles = {s.name: s.role for s in self.recipe.data.sources}
        held_out = {name: [self.prepared.conversations[i] for i in rows]
                    for name, rows in self.prepared.val_pools.items() if roles[name] == "domain"}
        self.probe_sets = probe_sets(self.recipe.monitor, held_out)
        encoded = self.prepared.encoded.add_column("source_id", self.prepared.source_index)
        self.encoded = encoded.add_column("record_index", list(range(len(encoded))))
        self.val_sets = {name: self.encoded.select(rows) for name, rows in self.prepared.val_pools.items() if rows}

    def write_start(self) -> None:
        """A fresh run writes its recipe, rejects and manifest; a resumed one drops the events logged
        after its checkpoint (they will be logged again)."""
        distributed.on_main(self._write_start)
        report_data(self.prepared, self.log)

    def _write_start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.point is None:
            (self.run_dir / "recipe.yaml").write_text(self.recipe.to_yaml(), encoding="utf-8")
            metrics_path.unlink(missing_ok=True)
            if self.prepared.rejects:
                write_rejects(self.prepared.rejects, self.run_dir / "rejects.jsonl")
            if self.prepared.augment_rejects:
                write_jsonl(self.prepared.augment_rejects, self.run_dir / "augment_rejects.jsonl")
            checkpoint.write_json_atomic(self.run_dir / "data_manifest.json", self.prepared.manifest)
        else:
            truncate(metrics_path, self.point.state["metrics_bytes"])
            truncate(self.run_dir / "monitor" / "samples.jsonl", self.point.state["samples_bytes"])

    def load_model(self) -> None:
        recipe = self.recipe
        transformers.set_seed(recipe.train.seed)
        model, checkpointing = recipe.model, recipe.train.gradient_checkpointing
        dtype, _ = choose_dtype(model.dtype, recipe.finetune.method)
        self.model = load_model(model.name_or_path, dtype=dtype, trust_remote_code=model.trust_remote_code,
                                allow_pickle_weights=model.allow_pickle_weights,
                                attn_implementation=model.attn_implementation, vocab_size=len(self.tokenizer),
                                gradient_checkpointing=checkpointing, rope_scaling=model.rope_scaling,
                                quantization=model.quantization)
        self._choose_loss_path()
        if torch_cuda() and not (recipe.train.deepspeed or recipe.train.fsdp or model.quantization):
            # on this process's GPU before the base is probed (the engines place and shard the model themselves;
            # k-bit weights load onto the GPU)
            self.model.to(distributed.local_device())
        if recipe.train.liger:
            patched = apply_liger_kernels(self.model)
            self.log("train.liger: " + ", ".join(f"{count} {kind}" for kind, count in sorted(patched.items())) +
                     f" modules in the {self.model.config.model_type} model")
        layers = recipe.finetune.layers
        self.reference = None
        lora = recipe.finetune.lora
        if recipe.finetune.method == "lora" and lora.init_from:
            if checkpointing:
                self.model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
            self.model = load_adapter(self.model, lora.init_from, "finetune.lora.init_from", trainable=True)
            self.log(f"finetune.lora.init_from: continuing the adapter in {lora.init_from}")
        elif recipe.finetune.method == "lora":
            self.model = add_lora(self.model, **lora.model_dump(exclude={"init_from"}),
                                  gradient_checkpointing=checkpointing, layers=layers)
        else:
            if recipe.train.kl_to_base > 0 or recipe.train.on_policy:  # the base for the KL terms: a frozen copy
                self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
                if torch_cuda():  # where the batches go, also under DeepSpeed / FSDP, which move only the model
                    self.reference.to(distributed.local_device())
            if layers is not None:
                _, count = decoder_layers(self.model)
                trainable = freeze_layers_outside(self.model, layer_indices(layers, count))
                self.log(f"finetune.layers {layers}: {trainable:,} parameters trainable")
        if recipe.train.compile:
            self.log(f"train.compile: {compile_layers(self.model)} decoder layers compiled, and the chunked loss "
                     "(the first steps compile them)")

    def check_disk_space(self) -> None:
        distributed.on_main(check_disk_space, self.recipe, self.model, self.prepared.plans, self.run_dir)

    def start_monitor(self) -> None:
        """The monitor, its state at the resume point, and the base model's answers (cached)."""
        recipe = self.recipe
        chat = Chat(self.tokenizer, self.template, recipe.model.system_prompt)
        sizes = {name: len(rows) for name, rows in self.prepared.train_pools.items()}
        self.monitor = Monitor(recipe.monitor, self.probe_sets, chat, self.run_dir, sizes, self.log)
        if self.point is not None and self.point.state.get("monitor"):
            self.monitor.load_state(self.point.state["monitor"])
        if recipe.monitor.probes and (distributed.is_main() or self.sharded):  # who probes
            self.log("probing the base model (answers cached in monitor/base.json)")
            self.monitor.compute_base(self.model)
        distributed.barrier()

    def start_on_policy(self) -> None:
        """train.on_policy: the general training prompts its draws sample, and its state at the resume point."""
        settings = self.recipe.train.on_policy
        if settings is None:
            return
        roles = {s.name: s.role for s in self.recipe.data.sources}
        system = self.recipe.model.system_prompt
        chat = Chat(self.tokenizer, self.template, system)
        prompts = [prompt_before_answer(self.template, self.prepared.conversations[i], system)
                   for name, rows in self.prepared.train_pools.items() if roles[name] == "general" for i in rows]
        # A prompt with its answer stays within what training sees (data.max_length).
        room = self.recipe.data.max_length - settings.max_new_tokens
        fitting = [(p, ids) for p, ids in zip(prompts, chat.tokenize(prompts) if prompts else []) if len(ids) <= room]
        if len(fitting) < len(prompts):
            self.log(f"train.on_policy: {len(prompts) - len(fitting)} of {len(prompts)} general prompts are longer "
                     f"than data.max_length - max_new_tokens ({room} tokens) and are never drawn")
        if not fitting:
            raise UserError("train.on_policy: no general training prompt leaves room for an answer within "
                            f"data.max_length ({self.recipe.data.max_length} tokens)")
        self.on_policy = OnPolicyAnswers(settings, chat, [p for p, _ in fitting], [ids for _, ids in fitting],
                                         self.recipe.train.seed, self.log)
        if self.point is not None and self.point.state.get("on_policy"):
            self.on_policy.load_state(self.point.state["on_policy"])

    def train_stage(self, index: int) -> bool:
        """Train one stage (or skip it, when it finished before a resume). False: the run stops here."""
        stage, plan, point = self.recipe.resolved_stages[index], self.prepared.plans[index], self.point
        if point is not None and index < len(point.completed):  # finished before the interruption
            self._count_steps(index, point.completed[index]["steps"])
            if "trained" in point.completed[index]:  # its stage end wrote it (runs before that did not)
                self.prepared.manifest["stages"][index]["trained"] = point.completed[index]["trained"]
            return True
        if point is not None and point.stopped_early:  # an early stop ended the run: later stages never ran
            return False
        trained = records_trained(self.recipe, stage, len(plan.order))
        self.log(f"stage {stage.name}: {len(plan.order)} records, "
                 + ", ".join(f"{k} {v:.1%}" for k, v in plan.realized_share_samples.items())
                 + (f"; max_steps {stage.max_steps} trains on the first {trained}" if trained < len(plan.order) else ""))
        trainer = self.trainer = self._trainer(stage, plan)
        trainer.train(resume_from_checkpoint=self._resume_into(trainer, stage, index))
        last = self.monitor.history[-1] if self.monitor.history else None
        evaluated = last is not None and (last["stage"], last["stage_step"]) == (stage.name, trainer.state.global_step)
        if (self.val_sets or self.recipe.monitor.probes) and not evaluated:  # every stage ends with an evaluation
            trainer.evaluate()
        stage_dir = self.run_dir / "checkpoints" / stage.name
        save_stage_end(trainer, stage_dir)
        self._count_steps(index, trainer.state.global_step)
        stopped_early = trainer.control.should_training_stop and trainer.state.global_step < trainer.state.max_steps
        distributed.on_main(self._seal_stage, index, trainer, stage_dir, stopped_early)
        if stopped_early:
            self.log(f"stopped in stage {stage.name}; later stages are skipped")
        return not stopped_early

    def _seal_stage(self, index: int, trainer, stage_dir: Path, stopped_early: bool) -> None:
        """The stage's mix record, what it trained in data_manifest.json, and its complete.json (main process)."""
        stage = self.recipe.resolved_stages[index]
        if trainer.run.mixer is not None:
            self._record_mix(stage, trainer)
        trained = self._trained(index, trainer)
        self.prepared.manifest["stages"][index]["trained"] = trained
        checkpoint.write_json_atomic(self.run_dir / "data_manifest.json", self.prepared.manifest)
        # complete.json keeps it for a resumed run, whose own plan cannot tell what this stage trained
        checkpoint.write_json_atomic(stage_dir / checkpoint.STAGE_COMPLETE, {
            "checkpoint": f"checkpoint-{trainer.state.global_step}", "steps": trainer.state.global_step,
            "stopped_early": bool(stopped_early), "trained": trained, "state": trainer.resume_state()})

    def _trained(self, index: int, trainer) -> dict:
        """The records the stage's optimizer steps took: the first ones of the order its batches were cut
        from in sequence (padded, padding-free or grouped by length alike), the plan's or the adaptive one."""
        plan = self.prepared.plans[index]
        order = trainer.run.mixer.order if trainer.run.mixer is not None else plan.order
        return trained_mix(order, trainer.records_trained(), trainer.state.global_step, self.prepared,
                           list(plan.samples), self.recipe.train.batch_size)

    def _choose_loss_path(self) -> None:
        """Padding-free batches and the chunked loss, where the loaded model allows them."""
        train = self.recipe.train
        self.padding_free = train.padding_free and use_packed_attention(self.model, self.log)
        chunked = train.loss_chunk_tokens and not (train.deepspeed or train.fsdp) and train.kl_to_base == 0
        head_only = (train.on_policy is not None or chunked) and head_gives_logits(self.model)  # one check
        self.answers_through_head = train.on_policy is not None and head_only
        if train.loss_chunk_tokens and (train.deepspeed or train.fsdp):
            # The chunked loss re-runs the head under activation checkpointing, where ZeRO-3 and FSDP have
            # already released the gathered weights: the plain loss keeps it correct.
            self.log("train.loss_chunk_tokens: the plain loss is used with train.deepspeed / train.fsdp")
        elif chunked:
            if head_only:
                self.loss_chunk_tokens = train.loss_chunk_tokens
            else:
                self.log("train.loss_chunk_tokens: this model changes its logits after its output head; "
                         "the plain loss is used")

    def _trainer(self, stage, plan):
        roles = {s.name: s.role for s in self.recipe.data.sources}
        run = StageRun(self.run_dir, stage.name, self.prepared.source_names, self.val_sets, self.step,
                       [c.provenance for c in self.prepared.conversations], self.started, self.log,
                       lambda: best_so_far(self.recipe, self.monitor, self.run_dir),
                       general_ids=[i for i, n in enumerate(self.prepared.source_names) if roles[n] == "general"],
                       reference=self.reference, on_policy=self.on_policy,
                       answers_through_head=self.answers_through_head, roles=roles, padding_free=self.padding_free,
                       loss_chunk_tokens=self.loss_chunk_tokens, compile_loss=self.recipe.train.compile,
                       probe_everywhere=self.sharded)
        train_set = self.encoded.select(plan.order)
        if stage.adaptive is not None:
            # The order starts as planned; the changes made before a resume point are replayed first.
            run.adaptive, run.mixer = stage.adaptive, AdaptiveOrder(plan, self.prepared.train_pools,
                                                                    self.recipe.train.seed,
                                                                    self.prepared.encoded["length"], self._arrange(stage))
            run.mix_weights = dict(stage.weights)
            for change in (c for c in self.monitor.mix_changes if c["stage"] == stage.name):
                run.mixer.reweight(change["position"], change["new"], change["number"])
                run.mix_weights = dict(change["new"])
            train_set = OrderedView(self.encoded, run.mixer)
        return stage_trainer(self.recipe, stage, self.model, self.tokenizer, train_set, run, self.monitor)

    def _arrange(self, stage):
        """How an adaptive stage orders each re-drawn remainder: grouped by length when the recipe asks."""
        train = self.recipe.train
        if not train.group_by_length:
            return None
        lengths = self.prepared.encoded["length"]
        return lambda remainder, number: group_by_length(remainder, lengths, train.batch_size, train.length_window,
                                                         f"{train.seed}:{stage.name}:adaptive:{number}")

    def _record_mix(self, stage, trainer) -> None:
        """monitor/mix.json: an adaptive stage's changes and the mix it trained on between them."""
        path = self.run_dir / "monitor" / "mix.json"
        record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        changes = [c for c in self.monitor.mix_changes if c["stage"] == stage.name]
        trained = trainer.records_trained()
        bounds = [0] + [min(c["position"], trained) for c in changes] + [trained]
        record[stage.name] = {
            "asked": dict(stage.weights), "changes": changes,
            "realized_share_samples": trainer.run.mixer.shares(0, trained),
            "realized_share_tokens": trainer.run.mixer.shares(0, trained, by="tokens"),
            "segments": [{"from_position": a, "to_position": b, "realized_share_samples": trainer.run.mixer.shares(a, b),
                          "realized_share_tokens": trainer.run.mixer.shares(a, b, by="tokens")}
                         for a, b in zip(bounds, bounds[1:]) if b > a]}
        checkpoint.write_json_atomic(path, record)

    def _resume_into(self, trainer, stage, index: int) -> str | None:
        """The checkpoint the stage continues from (for `Trainer.train`), or None. A stage that had not
        saved yet starts from its beginning with the weights of the previous stage's end."""
        point = self.point
        if point is None or index != len(point.completed):
            return None
        if point.checkpoint is not None:
            self.log(f"resuming stage {stage.name} from {point.checkpoint.relative_to(self.run_dir)}")
            trainer.load_resume_state(point.state)
            return str(point.checkpoint)
        if point.completed:
            self.log(f"resuming stage {stage.name} from its start, with the weights of "
                     f"{point.completed_checkpoint.relative_to(self.run_dir)}")
            checkpoint.load_weights(self.model, point.completed_checkpoint)
        return None

    def _count_steps(self, index: int, steps: int) -> None:
        self.prepared.manifest["stages"][index]["steps"] = steps
        self.step += steps

    def finish(self) -> None:
        """Final weights (the selected checkpoint's), verdicts, manifest and report (main process)."""
        final = self.run_dir / ("adapter" if self.recipe.finetune.method == "lora" else "model")
        sharded = self.sharded and self.trainer is not None
        if sharded:  # each process holds a part of the weights: the Trainer gathers them, every process takes part
            self.trainer.save_model(str(final))
        distributed.on_main(self._finish, final, sharded)

    def _finish(self, final: Path, saved: bool) -> None:
        if self.trainer is None and self.point is not None:  # every stage had finished: only the end remains
            checkpoint.load_weights(self.model, self.point.completed_checkpoint)
        if saved:
            (final / "training_args.bin").unlink(missing_ok=True)  # the Trainer's pickle: not part of the weights
        else:
            self.model.save_pretrained(final)
        self.tokenizer.save_pretrained(final)
        finish_monitor(self.recipe, self.monitor, self.run_dir, final, self.started, self.log)
        checkpoint.write_json_atomic(self.run_dir / "data_manifest.json", self.prepared.manifest)
        report = write_report(self.run_dir)
        self.log(f"run directory: {self.run_dir}  (weights in {final.name}/, metrics in metrics.jsonl, "
                 f"report {report.name})")
