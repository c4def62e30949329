"""Augmentation that never changes a fact: more ways of asking, and the facts in more contexts.

Physics of Language Models 3.1 (Allen-Zhu & Li) found that facts trained in one fixed wording are
recalled only in that wording, and that diverse rewrites and shuffled sentence orders let a model
answer questions it never saw. The augmenters here produce such variety by rules, never inventing
content: answers are copied verbatim (or their own sentences reordered); only the wording of the
question, or the framing prompt, changes.

- `rephrase`: the question in other forms and voices (formal, colloquial, patient, doctor), the
  medical terms copied as they are; rules for English and Chinese, extensible from a YAML file.
- `statements`: QA pairs about the same subject (linked by a rare shared term) joined into short
  knowledge passages in several sentence orders, answering "Tell me about X" prompts.
- `shuffle`: an answer of three or more sentences with its sentences in other orders.

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

AUGMENTERS = ("rephrase", "statements", "shuffle")

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
_STOPWORDS = set("""a an the of in on at to for with by from and or not no is are was were be been being do does did
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


@dataclass
class AugmentReport:
    records_in: int = 0
    per_augmenter: dict[str, dict] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    records_out: int = 0  # the originals plus the augmented records kept
    diversity_before: dict = field(default_factory=dict)
    diversity_after: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"records_in": self.records_in, "per_augmenter": self.per_augmenter,
                "exact_duplicates_removed": self.exact_duplicates, "near_duplicates_removed": self.near_duplicates,
                "records_out": self.records_out, "diversity_before": self.diversity_before,
                "diversity_after": self.diversity_after}


def check_settings(settings: AugmentSettings, field_name: str = "augment") -> None:
    unknown = [a for a in settings.augmenters if a not in AUGMENTERS]
    if unknown or not settings.augmenters:
        raise UserError(f"{field_name}.augmenters: unknown {', '.join(map(repr, unknown)) or '(none given)'} "
                        f"(known: {', '.join(AUGMENTERS)})")
    if settings.per_record < 1:
        raise UserError(f"{field_name}.per_record: must be at least 1")
    if not 0 < settings.near_duplicate_threshold <= 1:
        raise UserError(f"{field_name}.near_duplicate_threshold: must be in (0, 1]")
    if settings.rules_file and not Path(settings.rules_file).is_file():
        raise UserError(f"{field_name}.rules_file: {settings.rules_file}: no such file")


def augment(conversations: list[Conversation], settings: AugmentSettings,
            reference: list[Conversation] | None = None) -> tuple[list[Conversation], AugmentReport]:
    """New records made from `conversations` (not including them), deduplicated against them (or
    against `reference`, e.g. training and validation records both) and each other; and the counts.
    The originals are never changed. Callers check the settings first (check_settings), naming
    their own field."""
    rules = _rules(settings.rules_file)
    report = AugmentReport(records_in=len(conversations), diversity_before=diversity(conversations))
    made: list[Conversation] = []
    for name in settings.augmenters:
        rng = random.Random(f"{settings.seed}:{name}")
        if name == "rephrase":  # a record's rewrites depend on the record and the seed, not on its position
            new = [c for conv in conversations for c in _rephrase(
                conv, rules, settings.per_record, random.Random(f"{settings.seed}:{conv.content_key}"))]
        elif name == "statements":
            new = _statements(conversations, settings.per_record, rng)
        else:
            new = [c for conv in conversations for c in _shuffle(
                conv, settings.per_record, random.Random(f"{settings.seed}:shuffle:{conv.content_key}"))]
        report.per_augmenter[name] = {"made": len(new)}
        made += new
    kept, exact, near = _deduplicate(reference if reference is not None else conversations, made,
                                     settings.near_duplicate_threshold, settings.seed)
    for name in settings.augmenters:
        report.per_augmenter[name]["kept"] = sum(1 for c in kept if c.augmenter == name)
    report.exact_duplicates, report.near_duplicates = exact, near
    report.records_out = len(conversations) + len(kept)
    report.diversity_after = diversity(conversations + kept)
    return kept, report


# ---------------------------------------------------------------------------------------------
# Augmenters


def _language(text: str) -> str:
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
    for pattern, replacements in rules[_language(core)]:
        match = pattern.match(core)
        if not match:
            continue
        groups = [core] + list(match.groups())
        first = core.split()[0].lower() if core.split() else ""
        lowered = core[:1].lower() + core[1:] if first in _STOPWORDS else core  # "What ..." -> "what ...", names kept
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
    return "".join(sentences) if _language("".join(sentences)) == "zh" else " ".join(sentences)


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
    if _language(text) == "zh":
        chars = "".join(_CJK.findall(text))
        return {chars[i:i + 3] for i in range(len(chars) - 2)}
    return {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z\-]{3,}", text) if w.lower() not in _STOPWORDS}


def _statements(conversations: list[Conversation], per_record: int, rng: random.Random) -> list[Conversation]:
    """QA pairs that share a rare term grouped by subject, their answers joined into passages in
    several orders, each the answer to a "tell me about" prompt naming the subject."""
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
    groups = _linked(by_term, answer_terms)
    made = []
    for term in sorted(groups, key=lambda t: (-len(groups[t]), t)):
        members = groups[term]
        answers = [single[i].messages[1].content.strip() for i in members]
        if len(set(answers)) < 2:
            continue
        subject = _subject(term, [single[i].messages[0].content for i in members])
        language = _language(answers[0])
        prompts = _STATEMENT_PROMPTS[language]
        for order in [list(dict.fromkeys(answers))] + _orders(list(dict.fromkeys(answers)), per_record - 1, rng):
            prompt = rng.choice(prompts).format(x=subject)
            made.append(_derived(single[members[0]], "statements",
                                 (Message("user", prompt), Message("assistant", _join(order)))))
    return made


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
    """The term as the questions spell it, grown by the words that always surround it there."""
    if _CJK.search(term):
        return term
    spelled = []
    for question in questions:
        match = re.search(rf"\b({re.escape(term)})\b((?:\s+[a-z]+)?)", question, flags=re.IGNORECASE)
        if match:
            spelled.append(match.group(1) + match.group(2))
    if not spelled:
        return term
    common = Counter(spelled).most_common(1)[0]
    return common[0] if common[1] * 2 > len(spelled) else re.match(r"\S+", spelled[0]).group(0)


def _derived(origin: Conversation, augmenter: str, messages: tuple[Message, ...]) -> Conversation:
    return replace(origin, messages=tuple(messages), augmenter=augmenter, trimmed=False)


# ---------------------------------------------------------------------------------------------
# Deduplication and diversity


def _shingles(conversation: Conversation) -> set[str]:
    """Character 3-grams of the questions (near-identical wording matches), and the answers'
    sentences in pairs (so the same sentences in another order are a different record)."""
    shingles = set()
    for message in conversation.messages:
        if message.role == "user":
            text = re.sub(r"\s+", " ", message.content.lower())
            shingles |= {"q" + text[i:i + 3] for i in range(max(1, len(text) - 2))}
        else:
            sentences = ["^"] + _sentences(message.content) + ["$"]
            shingles |= {"a" + first + "\x00" + second for first, second in zip(sentences, sentences[1:])}
    return shingles


def _deduplicate(originals: list[Conversation], made: list[Conversation], threshold: float,
                 seed: int) -> tuple[list[Conversation], int, int]:
    """`made` without exact copies or near duplicates of the originals or of each other."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=64)
    seen = set()

    def signature(conversation: Conversation) -> MinHash:
        sketch = MinHash(num_perm=64, seed=seed)
        for shingle in _shingles(conversation):
            sketch.update(shingle.encode("utf-8"))
        return sketch

    for index, conversation in enumerate(originals):
        seen.add(conversation.content_key)
        lsh.insert(f"o{index}", signature(conversation))
    kept, exact, near = [], 0, 0
    for index, conversation in enumerate(made):
        if conversation.content_key in seen:
            exact += 1
            continue
        sketch = signature(conversation)
        if lsh.query(sketch):
            near += 1
            continue
        seen.add(conversation.content_key)
        lsh.insert(f"m{index}", sketch)
        kept.append(conversation)
    return kept, exact, near


def diversity(conversations: list[Conversation]) -> dict:
    """Of the questions: distinct word (or character) bigrams, and as a share of all bigrams (which
    falls as rewrites repeat the asked-about words), length spread, vocabulary."""
    questions = [m.content for c in conversations for m in c.messages if m.role == "user"]
    bigrams, vocabulary, lengths = [], set(), []
    for question in questions:
        units = list("".join(_CJK.findall(question))) if _language(question) == "zh" else question.lower().split()
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

    from medsft.data.prepare import write_rejects
    from medsft.data.readers import read_source

    check_settings(settings, "--augmenters/--per-record")
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
    log(format_report(result))
    return result


def format_report(result: dict) -> str:
    lines = [f"{result['records_in']} records read ({result['rejected']} rejected), {result['records_out']} written"]
    lines.append(f"{'augmenter':12} {'made':>7} {'kept':>7}")
    for name, counts in result["per_augmenter"].items():
        lines.append(f"{name:12} {counts['made']:7} {counts['kept']:7}")
    lines.append(f"duplicates removed: {result['exact_duplicates_removed']} exact, "
                 f"{result['near_duplicates_removed']} near")
    before, after = result["diversity_before"], result["diversity_after"]
    lines.append(f"{'questions':12} {'before':>9} {'after':>9}")
    for key in ("questions", "distinct_bigrams", "distinct_2", "question_length_mean", "question_length_std",
                "vocabulary"):
        lines.append(f"{key:22} {before[key]:>9} {after[key]:>9}")
    return "\n".join(lines)
