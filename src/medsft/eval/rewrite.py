"""Rewrites from a local model, through medsft's own batched generation (see medsft.data.rewrite)."""

from __future__ import annotations

from medsft.data.rewrite import RewriteSettings


class LocalRewriter:
    """A callable rewriter over a local model folder: the model loads on first use."""

    def __init__(self, settings: RewriteSettings, seed: int = 0, trust_remote_code: bool = False):
        self.settings = settings
        self.seed = seed
        self.trust_remote_code = trust_remote_code
        self.chat = None
        self.model = None

    def _load(self) -> None:
        from medsft.data.templates import get_template
        from medsft.eval.generate import Chat
        from medsft.models import load_model, load_tokenizer

        path = self.settings.model_path
        tokenizer = load_tokenizer(path, self.trust_remote_code, field="augment.rewrite.model_path")
        self.chat = Chat(tokenizer, get_template("tokenizer", tokenizer))
        self.model = load_model(path, trust_remote_code=self.trust_remote_code, vocab_size=len(tokenizer))
        self.model.eval()

    def __call__(self, prompts: list[tuple[str, str]]) -> list[str]:
        from medsft.eval.generate import Sampling, generate_prompts, prompt_for

        if self.model is None:
            self._load()
        rendered = [prompt_for(self.chat.template, user, system) for system, user in prompts]
        # Repeated prompts in one batch are different rows of one draw: different rewrites, the
        # same ones for the same seed and prompts.
        sampling = Sampling(self.settings.max_new_tokens, self.settings.temperature, 1.0, self.seed)
        answers = generate_prompts(self.model, self.chat, rendered, sampling, batch_size=16, label="rewriting")
        return [a.text for a in answers]
