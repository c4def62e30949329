"""Model-based rewriting, and the fact check every rewrite must pass.

A model (a local one, or any OpenAI-compatible endpoint) paraphrases questions and expands terse
answers into full sentences. Models invent; so a rewrite is kept only when it carries exactly the
facts of the text it rewrites: the same numbers with the same units, every drug and disease name
(and no new one), and the same negations. Everything else is rejected with its reason.

A rewriter is any callable taking (system, user) prompt pairs and returning one text per pair;
`EndpointRewriter` talks HTTP with the standard library, the local-model one lives in
`medsft.serve.rewrite` (it needs torch)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass

from medsft.data.augment import STOPWORDS, text_language
from medsft.errors import UserError

QUESTION_SYSTEM = ("You rewrite questions from patients and clinicians. Keep every medical term, drug name, "
                   "disease name, number and unit exactly as written, and keep any negation. "
                   "Reply with the rewritten question only.")
ANSWER_SYSTEM = ("You rewrite terse medical answers as one full sentence that names the subject of the question. "
                 "Copy every number, unit, drug name and disease name exactly; add no new fact. "
                 "Reply with the sentence only.")
QUESTION_PROMPT = {"en": "Rewrite this question in other words:\n{q}",
                   "zh": "请换一种说法改写这个问题（保留所有医学名词、药名、数字和单位）：\n{q}"}
ANSWER_PROMPT = {"en": "Question: {q}\nTerse answer: {a}\nThe answer as a full sentence:",
                 "zh": "问题：{q}\n简短回答：{a}\n请改写成一句完整的话（保留所有药名、数字和单位）："}

_UNITS = (r"mg|mcg|µg|ug|g|kg|ml|mL|l|L|IU|iu|units?|mmol|mmHg|%|bpm|mg/kg|mg/dL|mmol/L|°C|"
          r"days?|weeks?|months?|years?|hours?|minutes?|times?|tablets?|capsules?|drops?|"
          r"毫克|微克|克|千克|毫升|升|单位|次|片|粒|天|日|周|月|年|小时|分钟|岁|度")
_NUMBER = re.compile(rf"(\d+(?:[.,]\d+)?)\s*({_UNITS})?(?![A-Za-z])")
_WORD_NUMBERS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                 "eight": "8", "nine": "9", "ten": "10", "twice": "2x", "once": "1x", "thrice": "3x"}
_EN_NEGATION = re.compile(r"\b(?:not|no|never|none|nor|without|cannot)\b|n't\b", re.IGNORECASE)
_ZH_NEGATION = re.compile(r"[不没无勿禁别非未]")
_MEDICAL_SUFFIX = re.compile(
    r"\b[A-Za-z]+(?:mab|nib|pril|olol|sartan|statin|cillin|mycin|cycline|azole|vir|prazole|dipine|floxacin|"
    r"profen|parin|tidine|gliptin|formin|itis|osis|emia|aemia|oma|pathy|algia|plasia|ectomy)\b")
_ZH_NAME = re.compile(r"[\u4e00-\u9fff]{1,6}?(?:霉素|沙星|地平|洛尔|普利|沙坦|他汀|胶囊|注射液|颗粒|口服液|片|素|"
                      r"炎|癌|瘤|病|症|综合征)")
_CAPITALIZED = re.compile(r"\b[A-Z][a-z][A-Za-z\-]+")



def quantities(text: str) -> Counter:
    """Numbers with their units ("25 mg", "2x" for twice), as a multiset."""
    found = Counter()
    for number, unit in _NUMBER.findall(text):
        found[(number.replace(",", "."), (unit or "").lower().rstrip("s"))] += 1
    for word in re.findall(r"[A-Za-z]+", text):
        if word.lower() in _WORD_NUMBERS:
            found[(_WORD_NUMBERS[word.lower()], "")] += 1
    return found


def negations(text: str) -> int:
    return len((_ZH_NEGATION if text_language(text) == "zh" else _EN_NEGATION).findall(text))


def names(text: str, known: set[str] = frozenset()) -> set[str]:
    """Drug and disease names: words with a medical suffix, capitalized words that are not plain
    sentence openers, Chinese terms ending like drug or disease names, and the `known` terms
    (e.g. the subject a question and its answer share) that occur in the text."""
    lowered = text.lower()
    found = {w.lower() for w in _MEDICAL_SUFFIX.findall(text)}
    found |= {w.lower() for w in _CAPITALIZED.findall(text) if w.lower() not in STOPWORDS}
    found |= set(_ZH_NAME.findall(text))
    found |= {k for k in known if k and k.lower() in lowered}
    return found


def fact_check(original: str, rewritten: str, required: set[str] = frozenset(),
               allowed: set[str] = frozenset()) -> str | None:
    """Why `rewritten` does not carry exactly the facts of `original`, or None when it does.

    required: names that must appear (e.g. the record's subject); allowed: names the rewrite may
    add (e.g. the question's, when an answer is expanded to name its subject)."""
    if not rewritten.strip():
        return "empty rewrite"
    if rewritten.strip() == original.strip():
        return "unchanged"
    before, after = quantities(original), quantities(rewritten)
    if before != after:
        dropped = before - after
        added = after - before
        parts = [f"dropped {n} {u}".rstrip() for (n, u) in dropped] + [f"added {n} {u}".rstrip() for (n, u) in added]
        return "number or unit changed: " + ", ".join(parts)
    lowered = rewritten.lower()
    for name in sorted(names(original, required) | {r for r in required if r}):
        if name.lower() not in lowered:
            return f"name dropped: {name}"
    extra = sorted(n for n in names(rewritten) - names(original, required)
                   if n.lower() not in {a.lower() for a in allowed} and n.lower() not in original.lower())
    if extra:
        return f"name added: {extra[0]}"
    if negations(original) != negations(rewritten):
        return f"negation changed ({negations(original)} -> {negations(rewritten)})"
    return None


def clean(text: str) -> str:
    """The first non-empty line of a model's reply, without quotes or a leading label."""
    for line in text.strip().splitlines():
        line = re.sub(r"^(?:rewritten question|question|answer|sentence|改写|问题|回答)\s*[:：]\s*", "", line.strip(),
                      flags=re.IGNORECASE)
        line = line.strip().strip('"“”「」\'')
        if line:
            return line
    return ""


@dataclass(frozen=True)
class RewriteSettings:
    """Where rewrites come from: an endpoint (url, model, key) or a local model folder (model_path)."""

    url: str | None = None  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the endpoint's model name
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (never in the recipe)
    model_path: str | None = None  # a local model folder, run through medsft's own generation
    temperature: float = 0.8
    max_new_tokens: int = 96
    timeout: float = 120.0

    def check(self, field_name: str) -> None:
        if bool(self.url) == bool(self.model_path):
            raise UserError(f"{field_name}: give either url (an OpenAI-compatible endpoint) or model_path "
                            "(a local model), not both and not neither")
        if self.url and not re.match(r"^https?://", self.url):
            raise UserError(f"{field_name}.url: {self.url!r} is not an http(s) URL")
        if self.url and not self.model:
            raise UserError(f"{field_name}.model: the endpoint's model name is required with url")


class EndpointRewriter:
    """Rewrites through an OpenAI-compatible `/chat/completions` endpoint, one request per prompt."""

    def __init__(self, settings: RewriteSettings, seed: int = 0):
        self.settings = settings
        self.seed = seed
        self.key = os.environ.get(settings.api_key_env, "")
        self.url = settings.url.rstrip("/") + "/chat/completions"

    def __call__(self, prompts: list[tuple[str, str]]) -> list[str]:
        replies = []
        for number, (system, user) in enumerate(prompts):
            body = {"model": self.settings.model, "temperature": self.settings.temperature,
                    "max_tokens": self.settings.max_new_tokens, "seed": self.seed + number,
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
            request = urllib.request.Request(self.url, json.dumps(body).encode("utf-8"), method="POST",
                                             headers={"Content-Type": "application/json",
                                                      **({"Authorization": f"Bearer {self.key}"} if self.key else {})})
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                    payload = json.loads(response.read())
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")[:200]
                raise UserError(f"rewrite endpoint {self.url}: HTTP {error.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as error:
                raise UserError(f"rewrite endpoint {self.url}: cannot connect ({error})") from None
            try:
                replies.append(payload["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise UserError(f"rewrite endpoint {self.url}: not a chat completion: {str(payload)[:200]}") from None
        return replies


def question_prompts(question: str, count: int) -> list[tuple[str, str]]:
    return [(QUESTION_SYSTEM, QUESTION_PROMPT[text_language(question)].format(q=question))] * count


def answer_prompt(question: str, answer: str) -> tuple[str, str]:
    return ANSWER_SYSTEM, ANSWER_PROMPT[text_language(question + answer)].format(q=question, a=answer)
