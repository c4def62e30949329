"""Augmentation that never changes a fact: more ways of asking, and the facts in more contexts.

Physics of Language Models 3.1 (Allen-Zhu & Li) found that facts trained in one fixed wording are
recalled only in that wording, and that diverse rewrites and shuffled sentence orders let a model
answer questions it never saw. The augmenters here produce such variety by rules, never inventing
content: answers are copied verbatim (or their own sentences reordered); only the wording of the
question, or the framing prompt, changes.

- `rephrase`: the question in other forms and voices (formal, colloquial, patient, doctor), the
  medical terms copied as they are; rules for English and Chinese, extensible from a YAML file.
- `restate`: a terse answer ("Quelpram: 25 mg twice daily.") as full sentences that name the
  question's subject ("The dose of quelpram is 25 mg twice daily."), the value copied verbatim.
- `synonyms`: everyday and clinical words swapped in the questions (and in their rephrasings),
  from a built-in English/Chinese list and the user's own; never inside numbers or names.
- `statements`: QA pairs about the same subject (linked by a rare shared term) joined into short
  knowledge passages in several sentence orders, answering "Tell me about X" prompts.
- `multiturn`: the QA pairs about one subject as one conversation of follow-up questions.
- `shuffle`: an answer of three or more sentences with its sentences in other orders.
- `rewrite`: a model (local, or an OpenAI-compatible endpoint) paraphrases questions and expands
  terse answers; every rewrite passes a fact check (medsft.data.rewrite) or is rejected with its reason.

Every output record names its origin record (provenance) and its augmenter. Exact and near
duplicates (MinHash over character 3-grams, which suits Chinese) are removed and counted.
Deterministic for a given seed. Pure Python (datasketch for MinHash)."""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from medsft.data.records import Conversation, Message
from medsft.errors import UserError

AUGMENTERS = ("rephrase", "restate", "synonyms", "statements", "multiturn", "shuffle", "rewrite")
RULE_AUGMENTERS = AUGMENTERS[:-1]  # need no model

_CJK = re.compile(r"[\u4e00-\u9fff]")
_SENTENCE = re.compile(r"[^.!?。！？]+[.!?。！？]+")

# Question rewrites: (pattern over the whole question, replacements). {0} is the question without its
# final mark, {l} the same with its first letter in lower case; {1}.. are the groups. Openings and voices are the variety real users bring.
EN_RULES: list[tuple[str, list[str]]] = [
    (r"^(?:What|Which|How|Who|When|Where|Why)\b.*$", [
        "Could you tell me {l}?", "I'd like to know: {l}?", "Quick question. {0}?", "Doctor, {l}?",
        "{0}? Please explain.", "My family asked me this: {l}?", "Please answer this for a patient: {l}?",
        "As a nurse I need to check: {l}?",
    ]),
    (r"^What is (.+)$", ["Can you tell me what {1} is?", "Do you know what {1} is?", "Tell me what {1} is."]),
    (r"^Which (.+)$", ["Tell me which {1}.", "Do you know which {1}?", "I need to find out which {1}."]),
    (r"^How (.+)$", ["Can you explain how {1}?", "Tell me how {1}.", "I want to understand how {1}."]),
    (r"^Who (.+)$", ["Tell me who {1}.", "Do you know who {1}?"]),
    (r"^When (.+)$", ["Tell me when {1}.", "Do you know when {1}?"]),
    (r"^(Can|Should|Is|Are|Does|Do) (.+)$", ["I wonder: {l}?", "{0}? I am not sure.", "Please advise: {l}?"]),
]
ZH_RULES: list[tuple[str, list[str]]] = [
    (r"^(.+)$", [
        "请问，{0}？", "医生您好，{0}？", "我想了解一下：{0}？", "麻烦问一下，{0}？", "家里人让我问：{0}？",
        "想咨询一下，{0}？", "{0}？请详细说说。", "作为护士我想确认：{0}？",
    ]),
    (r"^(.+)是什么$", ["{1}是什么呢？", "能告诉我{1}是什么吗？", "我想知道{1}是什么。"]),
    (r"^(.+)怎么办$", ["{1}该怎么办？", "{1}应该怎么处理？"]),
    (r"^(.+)吃什么药$", ["{1}应该吃什么药？", "{1}用什么药比较好？"]),
]
_STATEMENT_PROMPTS = {
    "en": ["Tell me about {x}.", "What do you know about {x}?", "Summarize what is known about {x}.",
           "Give me the key facts on {x}."],
    "zh": ["介绍一下{x}。", "关于{x}你知道什么？", "总结一下{x}的要点。", "说说{x}的关键信息。"],
}
STOPWORDS = set("""a an the of in on at to for with by from and or not no is are was were be been being do does did
what which how who whom when where why can could should would will may might must have has had this that these
those it its they them their there here you your i me my we our he she his her about into than then also please
tell know people patients patient adult adults take taken given give used use usually often""".split())


@dataclass(frozen=True)
class AugmentSettings:
    augmenters: tuple[str, ...] = ("rephrase",)
    per_record: int = 4  # new records per original record, per augmenter, at most
    seed: int = 0
    near_duplicate_threshold: float = 0.9  # MinHash Jaccard over character 3-grams
    rules_file: str | None = None  # YAML: {en: [[pattern, [replacements]]], zh: [...]}
    synonyms_file: str | None = None  # YAML: {en: [[word, synonym, ...], ...], zh: [...]}
    rewrite: object | None = None  # medsft.data.rewrite.RewriteSettings, for the `rewrite` augmenter
    rewrite_with: object | None = field(default=None, compare=False)  # a rewriter callable (else the endpoint's)


@dataclass
class AugmentReport:
    records_in: int = 0
    per_augmenter: dict[str, dict] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    records_out: int = 0  # the originals plus the augmented records kept
    diversity_before: dict = field(default_factory=dict)
    diversity_after: dict = field(default_factory=dict)
    rewrite_rejects: list[dict] = field(default_factory=list)  # rewrites that failed the fact check, with why

    def to_json(self) -> dict:
        return {"records_in": self.records_in, "per_augmenter": self.per_augmenter,
                "exact_duplicates_removed": self.exact_duplicates, "near_duplicates_removed": self.near_duplicates,
                "records_out": self.records_out, "diversity_before": self.diversity_before,
                "diversity_after": self.diversity_after,
                "rewrite_rejected": len(self.rewrite_rejects)}


# `medsft augment`'s flag for each setting, named in its errors instead of a recipe field.
COMMAND_FLAGS = {"augmenters": "--augmenters", "per_record": "--per-record", "rules_file": "--rules",
                 "synonyms_file": "--synonyms", "rewrite": "--rewrite-url / --rewrite-model-path"}


def check_settings(settings: AugmentSettings, field_name: str = "augment", flags: dict[str, str] | None = None) -> None:
    """The settings' errors, each naming the recipe field `field_name`.SETTING, or `flags`[SETTING]."""
    def where(setting: str) -> str:
        return flags[setting] if flags and setting in flags else f"{field_name}.{setting}"

    unknown = [a for a in settings.augmenters if a not in AUGMENTERS]
    if unknown or not settings.augmenters:
        raise UserError(f"{where('augmenters')}: unknown {', '.join(map(repr, unknown)) or '(none given)'} "
                        f"(known: {', '.join(AUGMENTERS)})")
    if settings.per_record < 1:
        raise UserError(f"{where('per_record')}: must be at least 1")
    if not 0 < settings.near_duplicate_threshold <= 1:
        raise UserError(f"{where('near_duplicate_threshold')}: must be in (0, 1]")
    for name in ("rules_file", "synonyms_file"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise UserError(f"{where(name)}: {path}: no such file")
    if "rewrite" in settings.augmenters:
        if settings.rewrite is None:
            needs = ("an OpenAI-compatible endpoint (--rewrite-url and --rewrite-model) or a local model folder "
                     "(--rewrite-model-path)") if flags else \
                ("{url: ..., model: ...} (an OpenAI-compatible endpoint) or {model_path: ...}")
            raise UserError(f"{where('rewrite')}: the rewrite augmenter needs a model: {needs}")
        settings.rewrite.check(where("rewrite"))
    _synonym_groups(settings.synonyms_file)  # a bad file fails here, before anything runs


def augment(conversations: list[Conversation], settings: AugmentSettings,
            reference: list[Conversation] | None = None) -> tuple[list[Conversation], AugmentReport]:
    """New records made from `conversations` (not including them), deduplicated against them (or
    against `reference`, e.g. training and validation records both) and each other; and the counts.
    The originals are never changed. Callers check the settings first (check_settings), naming
    their own field."""
    rules = _rules(settings.rules_file)
    report = AugmentReport(records_in=len(conversations), diversity_before=diversity(conversations))
    made: list[Conversation] = []
    rephrased: list[Conversation] = []
    for name in settings.augmenters:
        rng = random.Random(f"{settings.seed}:{name}")

        def each(function, *args) -> list[Conversation]:
            # A record's outputs depend on the record and the seed, not on its position.
            label = "" if name == "rephrase" else f"{name}:"
            return [c for conv in conversations for c in function(
                conv, *args, settings.per_record, random.Random(f"{settings.seed}:{label}{conv.content_key}"))]

        if name == "rephrase":
            new = rephrased = each(_rephrase, rules)
        elif name == "restate":
            new = each(_restate)
        elif name == "synonyms":
            new = _synonyms(conversations, rephrased, _synonym_groups(settings.synonyms_file), settings)
        elif name == "statements":
            new = _statements(conversations, settings.per_record, rng)
        elif name == "multiturn":
            new = _multiturn(conversations, settings.per_record, rng)
        elif name == "shuffle":
            new = each(_shuffle)
        else:
            new, report.rewrite_rejects = _rewrite(conversations, settings)
            report.per_augmenter[name] = {"made": len(new), "rejected": len(report.rewrite_rejects)}
        report.per_augmenter.setdefault(name, {"made": len(new)})
        made += new
    kept, exact, near = _deduplicate(reference if reference is not None else conversations, made,
                                     settings.near_duplicate_threshold, settings.seed)
    for name in settings.augmenters:
        report.per_augmenter[name]["kept"] = sum(1 for c in kept if c.augmenter == name)
    report.exact_duplicates, report.near_duplicates = exact, near
    report.records_out = len(conversations) + len(kept)
    report.diversity_after = diversity(conversations + kept)
    return kept, report


AUGMENT_VERSION = "2"  # bump when an augmenter's output for the same input changes


def augment_cached(conversations: list[Conversation], settings: AugmentSettings, reference: list[Conversation],
                   cache_dir: str | Path) -> tuple[list[Conversation], AugmentReport, bool]:
    """`augment`, its result kept under cache_dir/augmented keyed by a hash of the records, the
    settings and the rule files' contents: the second run of a recipe (and a model rewrite, which is
    slow) is read back instead of redone. Returns (made, report, cache_hit)."""
    import hashlib
    import json

    digest = hashlib.sha256(AUGMENT_VERSION.encode())
    files = [Path(f).read_bytes() if f else b"" for f in (settings.rules_file, settings.synonyms_file)]
    rewrite = settings.rewrite
    digest.update(json.dumps([list(settings.augmenters), settings.per_record, settings.seed,
                              settings.near_duplicate_threshold, repr(rewrite) if rewrite else None,
                              type(settings.rewrite_with).__name__]).encode())
    for content in files:
        digest.update(hashlib.sha256(content).digest())
    for group in (conversations, reference):
        for conversation in group:
            digest.update(json.dumps([conversation.source, str(conversation.provenance), conversation.content_key]).encode())
        digest.update(b"\x01")
    path = Path(cache_dir) / "augmented" / (digest.hexdigest()[:32] + ".json")
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        report = AugmentReport(**{k: v for k, v in saved["report"].items()})
        return [_conversation(row) for row in saved["made"]], report, True
    made, report = augment(conversations, settings, reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"report": report.__dict__, "made": [
        {**c.to_json(), "augmenter": c.augmenter} for c in made]}, ensure_ascii=False), encoding="utf-8")
    partial.replace(path)
    return made, report, False


def _conversation(row: dict) -> Conversation:
    """A record as to_json wrote it (with its augmenter) back."""
    from medsft.data.records import Provenance

    messages = row["messages"]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = tuple(Message(m["role"], m["content"]) for m in messages if m["role"] != "system")
    provenance = Provenance(row["file"], row["line"]) if "file" in row else None
    return Conversation(turns, system, row.get("tools"), row.get("source", ""), provenance,
                        augmenter=row.get("augmenter"))


# ---------------------------------------------------------------------------------------------
# Augmenters


def text_language(text: str) -> str:
    return "zh" if len(_CJK.findall(text)) * 3 >= len(text.strip()) else "en"


def _rules(rules_file: str | None) -> dict[str, list[tuple[re.Pattern, list[str]]]]:
    rules = {"en": list(EN_RULES), "zh": list(ZH_RULES)}
    if rules_file:
        import yaml

        try:
            extra = yaml.safe_load(Path(rules_file).read_text(encoding="utf-8")) or {}
            for language, items in extra.items():
                rules.setdefault(language, [])
                rules[language] += [(str(pattern), [str(r) for r in replacements]) for pattern, replacements in items]
        except (ValueError, TypeError, AttributeError, yaml.YAMLError) as error:
            raise UserError(f"{rules_file}: expected {{en: [[PATTERN, [REPLACEMENT, ...]], ...], zh: [...]}} "
                            f"({str(error).splitlines()[0]})") from None
    compiled = {}
    for language, items in rules.items():
        try:
            compiled[language] = [(re.compile(pattern), replacements) for pattern, replacements in items]
        except re.error as error:
            raise UserError(f"rephrase rules ({language}): bad pattern: {error}") from None
    return compiled


def _question_forms(question: str, rules) -> list[str]:
    """Other wordings of one question; the words the rules capture are copied, never changed."""
    core = question.strip()
    mark = core[-1] if core and core[-1] in "?？.。" else ""
    core = core[:-1].rstrip() if mark else core
    forms = []
    for pattern, replacements in rules[text_language(core)]:
        match = pattern.match(core)
        if not match:
            continue
        groups = [core] + list(match.groups())
        first = core.split()[0].lower() if core.split() else ""
        lowered = core[:1].lower() + core[1:] if first in STOPWORDS else core  # "What ..." -> "what ...", names kept
        for replacement in replacements:
            try:
                form = replacement.format(*groups, l=lowered)
            except (IndexError, KeyError):
                continue
            if form != question:
                forms.append(form)
    return list(dict.fromkeys(forms))


def _rephrase(conversation: Conversation, rules, per_record: int, rng: random.Random) -> list[Conversation]:
    """The last question asked in other words; the answer (and any earlier turns) unchanged."""
    messages = conversation.messages
    last_question = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_question is None:
        return []
    forms = _question_forms(messages[last_question].content, rules)
    rng.shuffle(forms)
    return [_derived(conversation, "rephrase",
                     messages[:last_question] + (Message("user", form),) + messages[last_question + 1:])
            for form in forms[:per_record]]


# Restatement: (pattern over the question without its mark, sentences). {v}: the answer's value
# verbatim (a leading "Subject:" dropped), {V}: the same capitalized; {1}..: the question's groups,
# {1c}: capitalized.
EN_RESTATE: list[tuple[str, list[str]]] = [
    (r"^What (is|are) the (.+)$", ["The {2} {1} {v}.", "{V} {1} the {2}."]),
    (r"^How much (.+?) should (an adult|adults|a child|children|a patient|patients) take$",
     ["The dose of {1} for {2} is {v}.", "{2c} should take {v} of {1}."]),
    (r"^How is (.+?) (dosed|treated|given|taken)$", ["{1c} is {2} as follows: {v}."]),
    (r"^What dose of (.+?) is (used|given)$", ["The dose of {1} is {v}.", "{V} is the dose of {1} {2}."]),
    (r"^Which (drug|medicine|medication) treats (.+)$", ["{2c} is treated with {v}."]),
    (r"^What (drug|medicine|medication) is given for (.+)$", ["{2c} is treated with {v}."]),
    (r"^Who should not (take|use) (.+)$", ["{2c} should not be used by {v}."]),
]
ZH_RESTATE: list[tuple[str, list[str]]] = [
    (r"^(.+?)的(.+?)是(?:什么|多少)呢?$", ["{1}的{2}是{v}。"]),
    (r"^成人应该服用多少(.+)$", ["成人服用{1}的剂量是{v}。"]),
    (r"^(.+?)一次吃多少$", ["{1}的用量是{v}。"]),
    (r"^(.+?)(?:吃|用)什么药$", ["{1}可以用{v}治疗。"]),
    (r"^哪种药治疗(.+)$", ["{1}用{v}治疗。"]),
]


def _value(question: str, answer: str) -> str | None:
    """A terse answer's value: one short sentence, its leading "Subject:" dropped when the
    question names that subject; None when the answer is not terse."""
    text = answer.strip()
    labelled = re.match(r"^(.{1,60}?)[:：]\s*(.+)$", text, flags=re.DOTALL)
    if labelled and labelled.group(1).strip().lower() in question.lower():
        text = labelled.group(2).strip()
    text = re.sub(r"[.。!！]+$", "", text)
    if len(_sentences(text + ".")) != 1 or not text:
        return None
    if _terms(text) & _terms(question) or (text_language(text) == "zh" and _bigrams(text) & _bigrams(question)):
        return None  # the answer already names what was asked about: a sentence already
    if text_language(text) == "zh":
        return text if len(text) <= 24 and not re.search(r"[，,；;]", text) else None
    return text if len(text.split()) <= 12 else None


def _bigrams(text: str) -> set[str]:
    chars = "".join(_CJK.findall(text))
    return {chars[i:i + 2] for i in range(len(chars) - 1)}


def _restate(conversation: Conversation, per_record: int, rng: random.Random) -> list[Conversation]:
    """A single-exchange record whose answer is terse, answered in full sentences naming the subject."""
    if len(conversation.messages) != 2:
        return []
    question, answer = conversation.messages
    core = re.sub(r"[?？.。]+$", "", question.content.strip())
    value = _value(core, answer.content)
    if value is None:
        return []
    forms = []
    for pattern, sentences in EN_RESTATE if text_language(core) == "en" else ZH_RESTATE:
        match = re.match(pattern, core)
        if not match:
            continue
        groups = [core] + list(match.groups())
        capitals = {f"{i}c": g[:1].upper() + g[1:] for i, g in enumerate(groups) if g}
        for sentence in sentences:
            form = sentence.format(*groups, v=value, V=value[:1].upper() + value[1:], **capitals)
            if form.strip() != answer.content.strip():
                forms.append(form)
    forms = list(dict.fromkeys(forms))
    rng.shuffle(forms)
    return [_derived(conversation, "restate", (question, Message("assistant", form))) for form in forms[:per_record]]


# Synonyms: each group's members are interchangeable in a question. Everyday and clinical words
# only; names, numbers and doses are never touched (see _protected).
SYNONYMS: dict[str, list[list[str]]] = {
    "en": [
        ["symptom", "sign"], ["symptoms", "signs"], ["drug", "medicine", "medication"],
        ["drugs", "medicines", "medications"], ["treatment", "therapy"], ["dose", "dosage"],
        ["doctor", "physician"], ["illness", "sickness"], ["main", "chief", "principal"],
        ["treats", "manages"], ["treated", "managed"], ["causes", "leads to", "brings on"],
        ["cause", "lead to"], ["take", "use"], ["given", "administered"], ["adult", "grown-up"],
        ["adults", "grown-ups"], ["people", "persons"], ["avoided", "not be used"],
        ["high blood pressure", "hypertension"], ["heart attack", "myocardial infarction"],
        ["shortness of breath", "breathlessness"], ["tiredness", "fatigue"], ["stomach ache", "abdominal pain"],
        ["itching", "pruritus"], ["runny nose", "rhinorrhea"], ["kidney stones", "renal calculi"],
        ["low blood sugar", "hypoglycemia"], ["high blood sugar", "hyperglycemia"],
    ],
    "zh": [
        ["症状", "表现"], ["药物", "药品"], ["剂量", "用量"], ["医生", "大夫"], ["患者", "病人"],
        ["成人", "成年人"], ["发烧", "发热"], ["拉肚子", "腹泻"], ["头疼", "头痛"], ["高血压", "血压高"],
        ["心肌梗死", "心梗"], ["引起", "导致"], ["服用", "口服"], ["治疗", "医治"], ["哪些人", "什么人"],
    ],
}
_EN_NAME = re.compile(r"\b[A-Z][a-z\-]+(?:\s+[a-z]+)?")  # "Varnex fever": a capitalized word and the next
_QUANTITY = re.compile(r"\d[\d.,/]*\s*(?:%|[A-Za-zµ]+|[\u4e00-\u9fff]{1,2})?")
_ZH_DRUG = re.compile(r"[\u4e00-\u9fff]{1,6}?(?:霉素|沙星|地平|洛尔|普利|沙坦|他汀|胶囊|注射液|颗粒|口服液|片)")


def _synonym_groups(synonyms_file: str | None) -> dict[str, list[list[str]]]:
    groups = {language: [list(g) for g in items] for language, items in SYNONYMS.items()}
    if synonyms_file:
        import yaml

        try:
            extra = yaml.safe_load(Path(synonyms_file).read_text(encoding="utf-8")) or {}
            for language, items in extra.items():
                groups.setdefault(str(language), [])
                for group in items:
                    if not isinstance(group, list) or len(group) < 2:
                        raise ValueError(f"{group!r} is not a list of two or more words")
                    groups[str(language)].append([str(w) for w in group])
        except (ValueError, TypeError, AttributeError, yaml.YAMLError) as error:
            raise UserError(f"{synonyms_file}: expected {{en: [[WORD, SYNONYM, ...], ...], zh: [...]}} "
                            f"({str(error).splitlines()[0]})") from None
    return groups


def _protected(text: str) -> list[tuple[int, int]]:
    """Spans no substitution may touch: numbers with their units, and names (capitalized words
    with the word after them, Chinese drug names)."""
    spans = [m.span() for m in _QUANTITY.finditer(text)] + [m.span() for m in _ZH_DRUG.finditer(text)]
    for match in _EN_NAME.finditer(text):
        if match.group(0).split()[0].lower() not in STOPWORDS:
            spans.append(match.span())
    return spans


def _substitutions(text: str, groups: list[list[str]]) -> list[tuple[int, int, list[str]]]:
    """(start, end, alternatives) for each dictionary word in `text` outside the protected spans."""
    protected = _protected(text)
    found, taken = [], []
    words = sorted({(w, tuple(g)) for g in groups for w in g}, key=lambda item: -len(item[0]))
    for word, group in words:
        pattern = re.escape(word) if _CJK.search(word) else rf"\b{re.escape(word)}\b"
        for match in re.finditer(pattern, text, flags=0 if _CJK.search(word) else re.IGNORECASE):
            start, end = match.span()
            if any(start < b and a < end for a, b in protected + taken):
                continue
            taken.append((start, end))
            alternatives = [w for w in group if w.lower() != match.group(0).lower()]
            if match.group(0)[:1].isupper():
                alternatives = [w[:1].upper() + w[1:] for w in alternatives]
            found.append((start, end, alternatives))
    return sorted(found)


def _swapped(text: str, groups: list[list[str]], count: int, rng: random.Random) -> list[str]:
    """Up to `count` versions of `text` with some dictionary words replaced by a synonym."""
    places = _substitutions(text, groups)
    if not places:
        return []
    versions: list[str] = []
    for _ in range(count * 6):
        chosen = [(a, b, rng.choice(alts)) for a, b, alts in places if rng.random() < 0.7]
        if not chosen:
            continue
        out, last = [], 0
        for start, end, word in chosen:
            out += [text[last:start], word]
            last = end
        version = "".join(out) + text[last:]
        if version != text and version not in versions:
            versions.append(version)
        if len(versions) == count:
            break
    return versions


def _synonyms(conversations: list[Conversation], rephrased: list[Conversation], groups, settings) -> list[Conversation]:
    """Each record's last question (and its rephrasings, when `rephrase` ran) with synonyms swapped in."""
    by_origin: dict[str, list[Conversation]] = defaultdict(list)
    for conversation in rephrased:
        by_origin[(conversation.source, str(conversation.provenance))].append(conversation)
    made = []
    for conversation in conversations:
        rng = random.Random(f"{settings.seed}:synonyms:{conversation.content_key}")
        candidates = [conversation] + by_origin.get((conversation.source, str(conversation.provenance)), [])
        versions: list[Conversation] = []
        for candidate in candidates:
            messages = candidate.messages
            last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
            if last is None:
                continue
            language = text_language(messages[last].content)
            for text in _swapped(messages[last].content, groups.get(language, []), 2, rng):
                versions.append(_derived(conversation, "synonyms",
                                         messages[:last] + (Message("user", text),) + messages[last + 1:]))
        rng.shuffle(versions)
        made += versions[:settings.per_record]
    return made


def _sentences(text: str) -> list[str]:
    found = [s.strip() for s in _SENTENCE.findall(text)]
    rest = _SENTENCE.sub("", text).strip()
    return found + ([rest] if rest else [])


_REFERS_BACK = re.compile(r"^(?:It|Its|It's|They|Their|Them|This|These|That|Those|He|She|His|Her|The drug|"
                          r"The disease|其|它|该|这|此|他|她)\b|^(?:其|它|该|这|此|他|她)")


def _units(sentences: list[str]) -> list[str]:
    """Sentences that refer back ("Its main symptom ...", "其主要症状...") stay after the one before
    them: moved elsewhere, "its" would name something else."""
    units: list[str] = []
    for sentence in sentences:
        if units and _REFERS_BACK.match(sentence):
            units[-1] = _join([units[-1], sentence])
        else:
            units.append(sentence)
    return units


def _join(sentences: list[str]) -> str:
    return "".join(sentences) if text_language("".join(sentences)) == "zh" else " ".join(sentences)


def _orders(sentences: list[str], count: int, rng: random.Random) -> list[list[str]]:
    """Up to `count` sentence orders other than the given one."""
    seen, orders = {tuple(sentences)}, []
    for _ in range(count * 8):
        order = sentences[:]
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            orders.append(order)
        if len(orders) == count:
            break
    return orders


def _shuffle(conversation: Conversation, per_record: int, rng: random.Random) -> list[Conversation]:
    """A single-exchange record whose answer has 3+ sentences, with the sentences reordered."""
    if len(conversation.messages) != 2:
        return []
    question, answer = conversation.messages
    sentences = _units(_sentences(answer.content))
    if len(sentences) < 3:
        return []
    return [_derived(conversation, "shuffle", (question, Message("assistant", _join(order))))
            for order in _orders(sentences, per_record, rng)]


def _terms(text: str) -> set[str]:
    """Candidate subject terms: words (English) or character 3-grams (Chinese), minus common words."""
    if text_language(text) == "zh":
        chars = "".join(_CJK.findall(text))
        return {chars[i:i + 3] for i in range(len(chars) - 2)}
    return {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z\-]{3,}", text) if w.lower() not in STOPWORDS}


def _subject_groups(conversations: list[Conversation]) -> tuple[list[Conversation], dict[str, list[int]]]:
    """Single-exchange records with short answers, grouped by subject: {subject term: indices}."""
    single = [c for c in conversations if len(c.messages) == 2 and len(_sentences(c.messages[1].content)) <= 2]
    # A record's subject is named in its question and again in its answer ("What is the dose of X?"
    # -> "X: 25 mg"); topic words ("dose", "causes") are in one or the other.
    answer_terms = [_terms(c.messages[1].content) for c in single]
    terms = [_terms(c.messages[0].content) & answer for c, answer in zip(single, answer_terms)]
    frequency = Counter(t for ts in terms for t in ts)  # records whose subject terms include it
    names = {w.lower() for c in single for w in re.findall(r"(?<=\w )([A-Z][a-z\-]{3,})", c.messages[0].content)}
    # Each record joins the group of its rarest shared subject term; among equally rare ones, a
    # capitalized name ("Varnex") before a common noun ("fever").
    by_term: dict[str, list[int]] = defaultdict(list)
    for index, ts in enumerate(terms):
        shared = [t for t in ts if frequency[t] >= 2]
        if shared:
            by_term[min(shared, key=lambda t: (frequency[t], t not in names, -len(t), t))].append(index)
    return single, _linked(by_term, answer_terms)


def _statements(conversations: list[Conversation], per_record: int, rng: random.Random) -> list[Conversation]:
    """QA pairs that share a rare term grouped by subject, their answers joined into passages in
    several orders, each the answer to a "tell me about" prompt naming the subject."""
    single, groups = _subject_groups(conversations)
    made = []
    for term in sorted(groups, key=lambda t: (-len(groups[t]), t)):
        members = groups[term]
        answers = [single[i].messages[1].content.strip() for i in members]
        if len(set(answers)) < 2:
            continue
        subject = _subject(term, [single[i].messages[0].content for i in members])
        language = text_language(answers[0])
        prompts = _STATEMENT_PROMPTS[language]
        for order in [list(dict.fromkeys(answers))] + _orders(list(dict.fromkeys(answers)), per_record - 1, rng):
            prompt = rng.choice(prompts).format(x=subject)
            made.append(_derived(single[members[0]], "statements",
                                 (Message("user", prompt), Message("assistant", _join(order)))))
    return made


_FOLLOW_UPS = {"en": ["And ", "Also, ", "One more question: ", "Then "], "zh": ["那", "另外，", "还想问一下，", "还有，"]}


def _follow_up(question: str, rng: random.Random) -> str:
    opening = rng.choice(_FOLLOW_UPS[text_language(question)])
    first = question.split()[0].lower() if question.split() else ""
    if text_language(question) == "en" and first in STOPWORDS:
        question = question[:1].lower() + question[1:]
    return opening + question


def _multiturn(conversations: list[Conversation], per_record: int, rng: random.Random,
               longest: int = 4) -> list[Conversation]:
    """QA pairs about one subject as one conversation: the first question, then the others as
    follow-ups, each answered as in its record; several orders, up to `longest` exchanges."""
    single, groups = _subject_groups(conversations)
    made = []
    for term in sorted(groups, key=lambda t: (-len(groups[t]), t)):
        first_of: dict[tuple[str, str], int] = {}
        for i in groups[term]:
            first_of.setdefault((single[i].messages[0].content, single[i].messages[1].content), i)
        pairs = list(first_of)
        if len(pairs) < 2:
            continue
        for order in [pairs] + _orders(pairs, per_record - 1, rng):
            messages = []
            for number, (question, answer) in enumerate(order[:longest]):
                messages += [Message("user", question if number == 0 else _follow_up(question, rng)),
                             Message("assistant", answer)]
            made.append(_derived(single[first_of[order[0]]], "multiturn", tuple(messages)))
    return made


# Words a question and its answer share that are not its subject: rewording may change them.
_QUESTION_WORDS = set("""treat treats treated treating treatment treatments symptom symptoms sign signs dose doses
dosage usual usually adult adults diagnose diagnosed diagnosis prevent prevented prevention cause causes caused main
first should used common best given child children taken""".split())


def _rewrite(conversations: list[Conversation], settings: AugmentSettings) -> tuple[list[Conversation], list[dict]]:
    """Model rewrites of single-exchange records: `per_record` paraphrases of the question, and
    for a terse answer one expansion into a full sentence. Each must pass the fact check; the
    others come back as rejects {file, line, kind, original, rewrite, reason}."""
    from medsft.data.rewrite import EndpointRewriter, answer_prompt, clean, fact_check, question_prompts

    rewriter = settings.rewrite_with or EndpointRewriter(settings.rewrite, settings.seed)
    single = [c for c in conversations if len(c.messages) == 2]
    prompts, jobs = [], []
    for conversation in single:
        question, answer = (m.content for m in conversation.messages)
        asked = question_prompts(question, settings.per_record)
        prompts += asked
        jobs += [(conversation, "question")] * len(asked)
        if _value(re.sub(r"[?？.。]+$", "", question.strip()), answer) is not None:
            prompts.append(answer_prompt(question, answer))
            jobs.append((conversation, "answer"))
    replies = rewriter(prompts) if prompts else []
    made, rejects, seen = [], [], set()
    for (conversation, kind), reply in zip(jobs, replies):
        question, answer = conversation.messages
        # The record's subject must survive (a name both question and answer use), not its verbs.
        subject = {t for t in _terms(question.content) & _terms(answer.content) if t not in _QUESTION_WORDS}
        text = clean(reply)
        if kind == "question":
            why = fact_check(question.content, text, required=subject)
            if why is None and not re.search(r"[?？]\s*$", text):
                why = "not a question (the model answered or commented instead of rewording)"
            messages = (Message("user", text), answer)
        else:
            why = fact_check(answer.content, text, required=subject, allowed=_terms(question.content))
            messages = (question, Message("assistant", text))
        if why is None and (kind, text) in seen:
            why = "same as another rewrite"
        if why:
            rejects.append({"file": conversation.provenance.file if conversation.provenance else None,
                            "line": conversation.provenance.line if conversation.provenance else None,
                            "kind": kind, "original": question.content if kind == "question" else answer.content,
                            "rewrite": text, "reason": why})
            continue
        seen.add((kind, text))
        made.append(_derived(conversation, "rewrite", messages))
    return made, rejects


def _linked(by_term: dict[str, list[int]], answer_terms: list[set[str]], largest: int = 8) -> dict[str, list[int]]:
    """Subjects whose answers name another subject, joined: a disease's records ("X is treated
    with Y") and its drug's records ("Y: 25 mg") make one passage about X, up to `largest` records."""
    groups = {term: list(members) for term, members in by_term.items()}
    for term in sorted(by_term, key=lambda t: (-len(by_term[t]), t)):
        if term not in groups:
            continue
        for other in sorted(by_term):
            if other == term or other not in groups:
                continue
            names_other = any(other in answer_terms[i] for i in groups[term])
            if names_other and len(groups[term]) + len(groups[other]) <= largest:
                groups[term] += groups.pop(other)
    return groups


def _subject(term: str, questions: list[str]) -> str:
    """The term as the questions spell it, grown by the words (Chinese: characters) that always
    surround it there: "diabetes" -> "type 2 diabetes", "带状疱" -> "带状疱疹"."""
    if _CJK.search(term):
        holding = [q for q in questions if term in q]
        grown = term
        for step in (1, -1):  # right, then left
            while True:
                places = [q.find(grown) for q in holding]
                nexts = {q[p + len(grown)] if step == 1 and p + len(grown) < len(q) else
                         q[p - 1] if step == -1 and p > 0 else "" for q, p in zip(holding, places)}
                if len(nexts) != 1 or not _CJK.match(next(iter(nexts)) or " "):
                    break
                grown = grown + nexts.pop() if step == 1 else nexts.pop() + grown
        return grown
    words = [re.findall(r"[\w'\-]+", q) for q in questions]
    spans = []
    for tokens in words:
        lowered = [t.lower() for t in tokens]
        if term in lowered:
            spans.append((tokens, lowered.index(term), lowered.index(term) + 1))
    if not spans:
        return term
    for step in (1, -1):
        while True:
            neighbours = set()
            for tokens, start, end in spans:
                at = end if step == 1 else start - 1
                neighbours.add(tokens[at].lower() if 0 <= at < len(tokens) else None)
            word = next(iter(neighbours))
            if len(neighbours) != 1 or word is None or (word in STOPWORDS and step == -1) or len(spans) < 2:
                break
            spans = [(t, s, e + 1) if step == 1 else (t, s - 1, e) for t, s, e in spans]
    tokens, start, end = spans[0]
    return " ".join(tokens[start:end])


def _derived(origin: Conversation, augmenter: str, messages: tuple[Message, ...]) -> Conversation:
    return replace(origin, messages=tuple(messages), augmenter=augmenter, trimmed=False)


# ---------------------------------------------------------------------------------------------
# Deduplication and diversity


def _shingles(conversation: Conversation) -> tuple[set[str], set[str]]:
    """Character 3-grams of the questions (near-identical wording matches), and the answers'
    sentences in pairs (so the same sentences in another order are a different record)."""
    asked, answered = set(), set()
    for message in conversation.messages:
        if message.role == "user":
            text = re.sub(r"\s+", " ", message.content.lower())
            asked |= {text[i:i + 3] for i in range(max(1, len(text) - 2))}
        else:
            sentences = ["^"] + _sentences(message.content) + ["$"]
            answered |= {first + "\x00" + second for first, second in zip(sentences, sentences[1:])}
    return asked, answered


def _deduplicate(originals: list[Conversation], made: list[Conversation], threshold: float,
                 seed: int) -> tuple[list[Conversation], int, int]:
    """`made` without exact copies or near duplicates of the originals or of each other: a near
    duplicate has both questions and answers that similar (a restated answer to the same question,
    or the same answer to a reworded question, is new)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=64)
    answers: dict[str, MinHash] = {}
    seen = set()

    def signatures(conversation: Conversation) -> tuple[MinHash, MinHash]:
        sketches = []
        for shingles in _shingles(conversation):
            sketch = MinHash(num_perm=64, seed=seed)
            for shingle in shingles:
                sketch.update(shingle.encode("utf-8"))
            sketches.append(sketch)
        return sketches[0], sketches[1]

    for index, conversation in enumerate(originals):
        seen.add(conversation.content_key)
        asked, answered = signatures(conversation)
        lsh.insert(f"o{index}", asked)
        answers[f"o{index}"] = answered
    kept, exact, near = [], 0, 0
    for index, conversation in enumerate(made):
        if conversation.content_key in seen:
            exact += 1
            continue
        asked, answered = signatures(conversation)
        if any(answered.jaccard(answers[key]) >= threshold for key in lsh.query(asked)):
            near += 1
            continue
        seen.add(conversation.content_key)
        lsh.insert(f"m{index}", asked)
        answers[f"m{index}"] = answered
        kept.append(conversation)
    return kept, exact, near


def diversity(conversations: list[Conversation]) -> dict:
    """Of the questions: distinct word (or character) bigrams, and as a share of all bigrams (which
    falls as rewrites repeat the asked-about words), length spread, vocabulary."""
    questions = [m.content for c in conversations for m in c.messages if m.role == "user"]
    bigrams, vocabulary, lengths = [], set(), []
    for question in questions:
        units = list("".join(_CJK.findall(question))) if text_language(question) == "zh" else question.lower().split()
        vocabulary.update(units)
        bigrams += list(zip(units, units[1:]))
        lengths.append(len(question))
    mean = sum(lengths) / len(lengths) if lengths else 0.0
    spread = (sum((x - mean) ** 2 for x in lengths) / len(lengths)) ** 0.5 if lengths else 0.0
    return {"questions": len(questions), "distinct_bigrams": len(set(bigrams)),
            "distinct_2": round(len(set(bigrams)) / len(bigrams), 4) if bigrams else 0.0,
            "question_length_mean": round(mean, 1), "question_length_std": round(spread, 1),
            "vocabulary": len(vocabulary)}


# ---------------------------------------------------------------------------------------------
# `medsft augment IN... --out OUT`


def augment_files(inputs: list[str], out: str | Path, settings: AugmentSettings, on_bad_record: str = "fail",
                  log=print) -> dict:
    """Read the inputs (never modified), write OUT (the read records, then the augmented ones, in
    OpenAI-messages layout with `augmenter` and their origin's file and line), OUT's report and
    rejects beside it; returns the report."""
    import json

    from medsft.data.prepare import write_jsonl, write_rejects
    from medsft.data.readers import read_source

    check_settings(settings, flags=COMMAND_FLAGS)
    out = Path(out)
    resolved = {Path(p).resolve() for p in inputs}
    if out.resolve() in resolved:
        raise UserError(f"--out: {out} is an input; augmentation never modifies its inputs")
    originals, rejects = [], []
    for path in inputs:
        records = read_source(Path(path).stem or "data", path, "auto", on_bad_record)
        originals += records.conversations
        rejects += records.rejects
    made, report = augment(originals, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for conversation in originals + made:
            row = conversation.to_json()
            row["augmenter"] = conversation.augmenter
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(out)
    result = {"inputs": list(inputs), "settings": {"augmenters": list(settings.augmenters),
                                                   "per_record": settings.per_record, "seed": settings.seed},
              "rejected": len(rejects), **report.to_json()}
    (out.with_name(out.stem + ".report.json")).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                                          encoding="utf-8")
    if rejects:
        write_rejects(rejects, out.with_name(out.stem + ".rejects.jsonl"))
    rewrite_rejects = out.with_name(out.stem + ".rewrite_rejects.jsonl")
    rewrite_rejects.unlink(missing_ok=True)
    if report.rewrite_rejects:
        write_jsonl(report.rewrite_rejects, rewrite_rejects)
    log(format_report(result))
    return result


def format_report(result: dict) -> str:
    lines = [f"{result['records_in']} records read ({result['rejected']} rejected), {result['records_out']} written"]
    lines.append(f"{'augmenter':12} {'made':>7} {'kept':>7} {'fact-check rejects':>19}")
    for name, counts in result["per_augmenter"].items():
        lines.append(f"{name:12} {counts['made']:7} {counts['kept']:7} {counts.get('rejected', '-'):>19}")
    lines.append(f"duplicates removed: {result['exact_duplicates_removed']} exact, "
                 f"{result['near_duplicates_removed']} near")
    before, after = result["diversity_before"], result["diversity_after"]
    lines.append(f"{'questions':12} {'before':>9} {'after':>9}")
    for key in ("questions", "distinct_bigrams", "distinct_2", "question_length_mean", "question_length_std",
                "vocabulary"):
        lines.append(f"{key:22} {before[key]:>9} {after[key]:>9}")
    return "\n".join(lines)
