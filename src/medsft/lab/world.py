"""The forgetting lab's synthetic world, deterministic from a seed.

General skills come with long answers in one consistent style (restate, explain, answer, check),
as general chat data does. Medical knowledge is fictional, so no base model can know it, and is
rendered as terse QA, as real medical SFT data is. Every answer that can be scored carries a key:
general answers say "The answer is KEY." (scored by exact match of KEY); medical answers contain
the key fact (scored by whether it appears).

Beside the QA, every disease has a short knowledge passage (as a textbook or a medical corpus
would), trained as the answer to "Tell me about X". For half of the diseases the facts are also
trained as QA; for the other half (the transfer diseases) they appear only in the passage.

Probes are held out: general probes use inputs never seen in training (and, for facts, phrasings
never seen); medical paraphrase probes ask trained facts in words never used in training;
transfer probes ask facts seen only in passages, in the QA's own words.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    """One question with its reference answer and the key a scorer checks."""

    family: str
    question: str
    answer: str
    key: str

    def to_alpaca(self) -> dict:
        return {"instruction": self.question, "input": "", "output": self.answer}


@dataclass
class World:
    language: str
    seed: int
    general_train: list[Item] = field(default_factory=list)
    general_probes: list[Item] = field(default_factory=list)
    medical_train: list[Item] = field(default_factory=list)
    medical_trained_probes: list[Item] = field(default_factory=list)  # questions exactly as trained
    medical_paraphrase_probes: list[Item] = field(default_factory=list)  # trained facts, new words
    medical_transfer_probes: list[Item] = field(default_factory=list)  # facts seen only in passages
    diseases: list[dict] = field(default_factory=list)  # each with "qa": whether its facts are trained as QA

    def texts(self) -> list[str]:
        """Every string of the world, for training its tokenizer."""
        items = (self.general_train + self.general_probes + self.medical_train + self.medical_paraphrase_probes
                 + self.medical_transfer_probes)
        return [t for item in items for t in (item.question, item.answer)]

    def write(self, folder: Path) -> dict[str, Path]:
        """Training sets as files a recipe can point at (alpaca JSONL), and the probes as JSONL."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, items, fmt in [
            ("general", self.general_train, "train"),
            ("medical", self.medical_train, "train"),
            ("general_probes", self.general_probes, "probe"),
            ("medical_trained_probes", self.medical_trained_probes, "probe"),
            ("medical_paraphrase_probes", self.medical_paraphrase_probes, "probe"),
            ("medical_transfer_probes", self.medical_transfer_probes, "probe"),
        ]:
            path = folder / f"{name}.jsonl"
            with open(path, "w", encoding="utf-8") as out:
                for item in items:
                    row = item.to_alpaca() if fmt == "train" else {
                        "question": item.question, "key": item.key, "reference": item.answer, "family": item.family}
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
            paths[name] = path
        (folder / "knowledge_base.json").write_text(
            json.dumps(self.diseases, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        return paths


# --------------------------------------------------------------------------------------------
# Phrasebooks. Each family has training phrasings and held-out ones (used only by probes).

GENERAL_FACTS_EN = [
    ("the capital of France", "Paris"), ("the capital of Japan", "Tokyo"), ("the capital of Italy", "Rome"),
    ("the capital of Egypt", "Cairo"), ("the capital of Canada", "Ottawa"), ("the capital of Spain", "Madrid"),
    ("the capital of Kenya", "Nairobi"), ("the capital of Peru", "Lima"), ("the capital of Norway", "Oslo"),
    ("the capital of Greece", "Athens"), ("the largest planet", "Jupiter"), ("the closest star to Earth", "the Sun"),
    ("the color of a clear daytime sky", "blue"), ("the color of fresh grass", "green"),
    ("the color of snow", "white"), ("the number of days in a week", "seven"),
    ("the number of legs of a spider", "eight"), ("the number of months in a year", "twelve"),
    ("the boiling point of water at sea level", "100 degrees Celsius"), ("the freezing point of water", "0 degrees Celsius"),
    ("the largest ocean", "the Pacific Ocean"), ("the longest river in Africa", "the Nile"),
    ("the animal that says moo", "the cow"), ("the animal that barks", "the dog"),
    ("the gas that plants take in", "carbon dioxide"), ("the gas that people breathe in", "oxygen"),
    ("the opposite of hot", "cold"), ("the opposite of up", "down"), ("the first letter of the alphabet", "A"),
    ("the metal used in electric wires", "copper"), ("the season after winter", "spring"),
    ("the season after summer", "autumn"), ("the number of sides of a triangle", "three"),
    ("the number of hours in a day", "twenty-four"), ("the language spoken in Brazil", "Portuguese"),
    ("the instrument with black and white keys", "the piano"), ("the organ that pumps blood", "the heart"),
    ("the planet we live on", "Earth"), ("the tallest animal", "the giraffe"), ("the fastest land animal", "the cheetah"),
]  # fmt: skip

GENERAL_FACTS_ZH = [
    ("法国的首都", "巴黎"), ("日本的首都", "东京"), ("意大利的首都", "罗马"), ("埃及的首都", "开罗"),
    ("加拿大的首都", "渥太华"), ("西班牙的首都", "马德里"), ("肯尼亚的首都", "内罗毕"), ("秘鲁的首都", "利马"),
    ("挪威的首都", "奥斯陆"), ("希腊的首都", "雅典"), ("最大的行星", "木星"), ("离地球最近的恒星", "太阳"),
    ("晴朗白天天空的颜色", "蓝色"), ("新鲜草地的颜色", "绿色"), ("雪的颜色", "白色"), ("一周的天数", "七天"),
    ("蜘蛛腿的数量", "八条"), ("一年的月数", "十二个月"), ("海平面上水的沸点", "一百摄氏度"), ("水的冰点", "零摄氏度"),
    ("最大的海洋", "太平洋"), ("非洲最长的河流", "尼罗河"), ("会哞哞叫的动物", "牛"), ("会汪汪叫的动物", "狗"),
    ("植物吸收的气体", "二氧化碳"), ("人吸入的气体", "氧气"), ("热的反义词", "冷"), ("上的反义词", "下"),
    ("英文字母表的第一个字母", "A"), ("电线常用的金属", "铜"), ("冬天之后的季节", "春天"), ("夏天之后的季节", "秋天"),
    ("三角形的边数", "三条"), ("一天的小时数", "二十四小时"), ("巴西说的语言", "葡萄牙语"), ("有黑白琴键的乐器", "钢琴"),
    ("泵送血液的器官", "心脏"), ("我们居住的行星", "地球"), ("最高的动物", "长颈鹿"), ("陆地上跑得最快的动物", "猎豹"),
]  # fmt: skip

PHRASES = {
    "en": {
        "fact_q": ["What is {s}?", "Tell me {s}.", "Can you tell me {s}?", "Please tell me {s}.", "I want to know {s}."],
        "fact_q_heldout": ["Do you know {s}?", "Please name {s}."],
        "fact_a": "You asked about {s}. This is a common fact that many people learn at school, and it is easy "
        "to check in any reference book. The answer is {k}. I hope this short explanation helps you.",
        "copy_q": ["Copy this list: {l}.", "Repeat the list {l}.", "Write the list {l} again.",
                   "Copy the following items: {l}.", "Please repeat this list: {l}."],
        "copy_a": "You asked me to copy the list {l}. Copying means writing every item again in the same order, "
        "without adding or removing anything. The answer is {k}. Each item appears exactly once, as in the original.",
        "first_q": ["What is the first item of the list {l}?", "Name the item that opens the list {l}.",
                    "Which item comes first in the list {l}?", "Tell me the item at the beginning of {l}.",
                    "What does the list {l} start with?"],
        "first_a": "You asked me for the first item of the list {l}. The first item is the one at the very start, "
        "before all the others. The answer is {k}. Nothing comes before it in the list.",
        "count_q": ["How many items are in this list: {l}?", "Count the items in the list {l}.",
                    "What is the number of items in {l}?", "How many items does the list {l} have?",
                    "Tell me how many items are in {l}."],
        "count_a": "You asked me to count the items in the list {l}. Counting means going through the list one "
        "item at a time and adding one for each. The answer is {k}. I counted every item exactly once.",
        "last_q": ["What is the last item of the list {l}?", "Name the final item in {l}.",
                   "Which item comes last in the list {l}?", "Tell me the item at the end of {l}.",
                   "What does the list {l} end with?"],
        "last_a": "You asked me for the last item of the list {l}. The last item is the one at the very end, "
        "after all the others. The answer is {k}. Nothing comes after it in the list.",
        "med": {
            "symptom": (["What is the main symptom of {d}?", "Which symptom does {d} cause?",
                         "What symptom do people with {d} have?", "How does {d} show itself?"],
                        ["Patients with {d} usually notice which sign?"], "{d} causes {k}."),
            "drug": (["What is the treatment for {d}?", "Which drug treats {d}?",
                      "How is {d} treated?", "What drug is given for {d}?"],
                     ["If someone has {d}, what medicine should they receive?"], "{D} is treated with {k}."),
            "dose": (["What is the dose of {m}?", "How much {m} should an adult take?",
                      "What dose of {m} is used?", "How is {m} dosed?"],
                     ["What amount of {m} is given to an adult?"], "{M}: {k}."),
            "contra": (["Who should not take {m}?", "What is the contraindication of {m}?",
                        "When must {m} be avoided?", "Who cannot be given {m}?"],
                       ["In which patients is {m} forbidden?"], "Avoid {m} in people with {k}."),
        },
        "passage_q": ["Tell me about {d}.", "What do you know about {d}?"],
        "passage": "{D} is a rare disease. Its main symptom is {symptom}. {D} is treated with {drug}. "
                   "The adult dose of {drug} is {dose}. {Drug} must not be given to people with {contra}.",
        "closings": [""],
        "disease_suffix": ["syndrome", "fever", "disease", "palsy", "fatigue"],
        "symptoms": ["a blue rash", "joint pain", "night sweats", "a dry cough", "blurred vision", "hair loss",
                     "a metallic taste", "cold hands", "ringing ears", "muscle cramps", "hiccups", "itchy eyes"],
        "conditions": ["kidney stones", "asthma", "low blood pressure", "liver disease", "pregnancy",
                       "gout", "epilepsy", "anemia", "glaucoma", "diabetes"],
        "dose_form": "{n} mg {f}",
        "dose_freq": ["once daily", "twice daily", "every morning", "at night"],
    },
    "zh": {
        "fact_q": ["{s}是什么？", "告诉我{s}。", "你能告诉我{s}吗？", "请告诉我{s}。", "我想知道{s}。"],
        "fact_q_heldout": ["你知道{s}吗？", "请说出{s}。"],
        "fact_a": "你问的是{s}。这是很多人在学校里学过的常识，在任何参考书里都很容易查到。答案是{k}。"
        "希望这个简短的解释对你有帮助。我又核对了一遍关于{s}的资料，确认{k}是正确的。",
        "copy_q": ["抄写这个列表：{l}。", "重复列表{l}。", "把列表{l}再写一遍。", "抄写下面这些项：{l}。",
                   "请重复这个列表：{l}。"],
        "copy_a": "你让我抄写列表{l}。抄写就是按原来的顺序把每一项重新写一遍，不增加也不删除。答案是{k}。"
        "每一项都和原列表一样只出现一次。我又把{l}从头到尾核对了一遍，确认{k}没有遗漏。",
        "first_q": ["列表{l}的第一项是什么？", "说出{l}的第一项。", "列表{l}里排在最前面的是哪一项？",
                    "告诉我{l}开头的那一项。", "列表{l}以哪一项开始？"],
        "first_a": "你问的是列表{l}的第一项。第一项就是排在最前面、在其他所有项之前的那一项。答案是{k}。"
        "列表里没有任何项排在它前面。我又把{l}从头到尾核对了一遍，确认第一项是{k}。",
        "count_q": ["这个列表有几项：{l}？", "数一数列表{l}有多少项。", "列表{l}里有多少个元素？",
                    "列表{l}一共有多少项？", "告诉我{l}里有几项。"],
        "count_a": "你让我数列表{l}的项数。计数就是逐项查看列表，每看到一项就加一。答案是{k}。"
        "我把每一项都恰好数了一次。我又把{l}从头到尾核对了一遍，确认一共是{k}项。",
        "last_q": ["列表{l}的最后一项是什么？", "说出{l}的最后一项。", "列表{l}里排在最后的是哪一项？",
                    "告诉我{l}末尾的那一项。", "列表{l}以哪一项结束？"],
        "last_a": "你问的是列表{l}的最后一项。最后一项就是排在最末尾、在其他所有项之后的那一项。答案是{k}。"
        "列表里没有任何项排在它后面。我又把{l}从头到尾核对了一遍，确认最后一项是{k}。",
        "med": {
            "symptom": (["{d}的主要症状是什么？", "{d}会引起什么症状？", "得了{d}会有什么症状？", "{d}有哪些表现？"], ["患了{d}的人通常会出现什么表现？"], "{d}引起{k}。"),
            "drug": (["{d}怎么治疗？", "哪种药治疗{d}？", "{d}用什么药？", "治疗{d}的药物是什么？"], ["得了{d}应该用什么药？"], "{d}用{k}治疗。"),
            "dose": (["{m}的剂量是多少？", "成人应该服用多少{m}？", "{m}怎么服用？", "{m}一次吃多少？"], ["成年人一次给多少{m}？"], "{m}：{k}。"),
            "contra": (["哪些人不能用{m}？", "{m}的禁忌症是什么？", "什么情况下不能用{m}？", "{m}不适合哪些人？"], ["{m}禁用于哪些病人？"], "{k}患者禁用{m}。"),
        },
        "passage_q": ["介绍一下{d}。", "你了解{d}吗？"],
        "passage": "{d}是一种少见的疾病，主要症状是{symptom}。{d}用{drug}治疗。{drug}的成人剂量是{dose}。"
                   "{contra}患者不能使用{drug}。",
        "closings": ["如果你还有别的问题，欢迎随时继续问我，我会尽量详细地回答，并且把每一步的理由都解释清楚。",
                     "这类问题只要按步骤仔细检查，通常都能得到可靠的结果；遇到不确定的地方，再回头核对一遍就好。",
                     "要是你想再练习一次，可以换一个例子，我们一起来验证答案，看看每一步是不是都做对了。"],
        "disease_suffix": ["综合征", "热", "病", "症"],
        "symptoms": ["蓝色皮疹", "关节痛", "夜间盗汗", "干咳", "视力模糊", "脱发", "口中金属味", "手脚冰凉",
                     "耳鸣", "肌肉抽筋", "打嗝", "眼睛发痒"],
        "conditions": ["肾结石", "哮喘", "低血压", "肝病", "妊娠", "痛风", "癫痫", "贫血", "青光眼", "糖尿病"],
        "dose_form": "{f}{n}毫克",
        "dose_freq": ["每日一次", "每日两次", "每天早上", "每晚"],
    },
}  # fmt: skip

_SYLLABLES_EN = ["var", "nex", "quel", "lin", "zor", "tam", "bri", "dol", "fen", "cor", "mal", "tis", "rov", "kel",
                 "pra", "sun", "vel", "dra", "mox", "ter", "gal", "pin", "sor", "lux"]
_DRUG_ENDINGS_EN = ["pram", "mex", "zole", "vir", "tinib", "dex", "lol", "cort"]
_CHARS_ZH = list("瓦奈克斯奎林佐塔布里多芬科马蒂罗凯普森维德莫特加宾索卢")
_DRUG_CHARS_ZH = list("普美唑韦替德洛可")


def _list_text(items: list[str], language: str) -> str:
    return " ".join(items) if language == "en" else "、".join(items)


_GENERAL_WORDS_EN = ("apple river green table music window garden pencil cloud bread water paper chair "
                     "light stone summer winter friend letter doctor nurse health body head hand").split()


def item_pool(language: str, avoid: set[str], rng: random.Random, codes: int = 300) -> list[str]:
    """What the general rule skills' lists are made of: digits, everyday and medical words, and
    invented codes built like the fictional names (never equal to one of them).

    A real base model has seen every token of the medical vocabulary before it learns any medical
    fact; these lists give the lab's base model the same, without teaching it a single fact.
    """
    p = PHRASES[language]
    words: set[str] = set()
    phrases = [*p["symptoms"], *p["conditions"], *p["dose_freq"], *p["disease_suffix"]]
    for questions, heldout, answer in p["med"].values():
        phrases += [*questions, *heldout, answer]
    for phrase in phrases:
        for word in _words(phrase, language):
            words.add(word)
    if language == "en":
        words.update(_GENERAL_WORDS_EN)
    pool = [str(d) for d in range(10)] + sorted(words)
    made: set[str] = set()
    while len(made) < codes:
        if language == "en":
            code = "".join(rng.sample(_SYLLABLES_EN, 2))
            code = code.capitalize() if rng.random() < 0.5 else code + rng.choice(_DRUG_ENDINGS_EN)
        else:
            code = "".join(rng.sample(_CHARS_ZH, rng.choice([2, 3]))) + rng.choice(["", *_DRUG_CHARS_ZH])
        if code not in avoid and not any(code in name or name in code or name.split()[0] == code for name in avoid):
            made.add(code)
    return pool + sorted(made)


def _words(phrase: str, language: str) -> list[str]:
    phrase = phrase.replace("{d}", " ").replace("{D}", " ").replace("{m}", " ").replace("{M}", " ").replace("{k}", " ")
    if language == "en":
        return [w.strip(".,:?!") for w in phrase.split() if w.strip(".,:?!").isalpha()]
    return [w for w in re.split(r"[\s，。？：、！{}]+", phrase) if w]


def _lists(rng: random.Random, pool: list[str], n: int, lo: int = 3, hi: int = 4) -> list[list[str]]:
    digits = pool[:10]
    return [[rng.choice(digits) if rng.random() < 0.5 else rng.choice(pool) for _ in range(rng.randint(lo, hi))]
            for _ in range(n)]


def _general(rng: random.Random, language: str, per_family: int, probes_per_family: int, fact_repeats: int,
             pool: list[str]):
    p = dict(PHRASES[language])
    # Chinese packs more meaning per token: a closing sentence keeps its answers as long as the English ones.
    closings = p["closings"]
    for family in ("fact", "copy", "first", "count", "last"):
        p[f"{family}_a"] = p[f"{family}_a"] + "{c}"
    facts = GENERAL_FACTS_EN if language == "en" else GENERAL_FACTS_ZH
    train, probes = [], []
    # Facts: every fact is trained (memorized general knowledge); probes ask them in held-out phrasings.
    # Memorized knowledge needs many exposures; repeating the facts keeps them from drowning in the rule data.
    for subject, key in facts:
        for q in p["fact_q"]:
            train += [Item("fact", q.format(s=subject), p["fact_a"].format(s=subject, k=key, c=rng.choice(closings)), key)] * fact_repeats
    for subject, key in rng.sample(facts, min(probes_per_family, len(facts))):
        q = rng.choice(p["fact_q_heldout"])
        probes.append(Item("fact", q.format(s=subject), p["fact_a"].format(s=subject, k=key, c=rng.choice(closings)), key))

    # Rule skills: probes use lists never seen in training, asked in the trained phrasings (a model this
    # small does not carry a skill over to a new wording of the request; the facts' probes test wording).
    def rule(family: str, solve) -> None:
        seen: set[str] = set()
        for items in _lists(rng, pool, per_family):
            text = _list_text(items, language)
            seen.add(text)
            q = rng.choice(p[f"{family}_q"]).format(l=text)
            key = solve(items)
            train.append(Item(family, q, p[f"{family}_a"].format(l=text, k=key, c=rng.choice(closings)), key))
        made = 0
        while made < probes_per_family:
            items = _lists(rng, pool, 1)[0]
            text = _list_text(items, language)
            if text in seen:
                continue
            seen.add(text)
            key = solve(items)
            answer = p[f"{family}_a"].format(l=text, k=key, c=rng.choice(closings))
            probes.append(Item(family, rng.choice(p[f"{family}_q"]).format(l=text), answer, key))
            made += 1

    rule("copy", lambda xs: _list_text(xs, language))
    rule("first", lambda xs: xs[0])
    rule("count", lambda xs: str(len(xs)))

    rule("last", lambda xs: xs[-1])
    rng.shuffle(train)
    return train, probes


def _names(rng: random.Random, language: str, n: int):
    """n fictional disease names and n fictional drug names, all distinct."""
    diseases, drugs = [], []
    seen: set[str] = set()
    p = PHRASES[language]
    while len(diseases) < n:
        if language == "en":
            stem = "".join(rng.sample(_SYLLABLES_EN, 2))
            name = f"{stem.capitalize()} {rng.choice(p['disease_suffix'])}"
        else:
            name = "".join(rng.sample(_CHARS_ZH, 3)) + rng.choice(p["disease_suffix"])
        if name not in seen:
            seen.add(name)
            diseases.append(name)
    while len(drugs) < n:
        if language == "en":
            name = rng.choice(_SYLLABLES_EN) + rng.choice(_SYLLABLES_EN) + rng.choice(_DRUG_ENDINGS_EN)
        else:
            name = "".join(rng.sample(_CHARS_ZH, 2)) + rng.choice(_DRUG_CHARS_ZH)
        if name not in seen:
            seen.add(name)
            drugs.append(name)
    return diseases, drugs


def _medical(rng: random.Random, language: str, n_diseases: int, qa_share: float = 0.5, qa_phrasings: int = 2,
             repeats: int = 1):
    """The fictional knowledge base, its training records (QA for the first `qa_share` of the diseases,
    a passage for every disease; each `repeats` times), and the probes: as trained, paraphrased, and
    passage-only (transfer). QA is asked in the first `qa_phrasings` phrasings of the phrasebook."""
    p = PHRASES[language]
    diseases, drugs = _names(rng, language, n_diseases)
    with_qa = round(n_diseases * qa_share)
    kb, train, trained_probes, paraphrases, transfer = [], [], [], [], []
    for number, (disease, drug) in enumerate(zip(diseases, drugs)):
        dose = p["dose_form"].format(n=rng.choice([5, 10, 15, 20, 25, 40, 50, 80]), f=rng.choice(p["dose_freq"]))
        facts = {
            "symptom": rng.choice(p["symptoms"]),
            "drug": drug,
            "dose": dose,
            "contra": rng.choice(p["conditions"]),
        }
        qa = number < with_qa
        kb.append({"disease": disease, **facts, "qa": qa})
        fill = {"d": disease, "D": disease, "m": drug, "M": _capital(drug, language)}
        passage = p["passage"].format(**fill, drug=drug, Drug=_capital(drug, language), **{
            k: v for k, v in facts.items() if k != "drug"})
        for q in p["passage_q"]:
            train += [Item("medical_passage", q.format(**fill), passage, drug)] * repeats
        for kind, key in facts.items():
            train_qs, heldout_qs, answer = p["med"][kind]
            text = _capital(answer.format(**fill, k=key), language)
            probe = Item(f"medical_{kind}", train_qs[0].format(**fill), text, key)
            if not qa:
                transfer.append(probe)
                continue
            for q in train_qs[:qa_phrasings]:
                train += [Item(f"medical_{kind}", q.format(**fill), text, key)] * repeats
            trained_probes.append(probe)
            paraphrases.append(Item(f"medical_{kind}", heldout_qs[0].format(**fill), text, key))
    rng.shuffle(train)
    return kb, train, trained_probes, paraphrases, transfer


def _capital(text: str, language: str) -> str:
    return text[:1].upper() + text[1:] if language == "en" else text


def build_world(seed: int = 0, language: str = "en", n_diseases: int = 40, per_family: int = 1500, fact_repeats: int = 4,
                probes_per_family: int = 30, probe_facts: int = 120, qa_phrasings: int = 2,
                medical_repeats: int = 5) -> World:
    """The whole world from a seed: same seed and settings, same world, byte for byte.

    40 fictional diseases (half of them with QA), each QA and passage record seen `medical_repeats`
    times per epoch: few enough facts, and exposures enough, that 10 epochs of LoRA learn them as
    trained (the lab measures whether they also hold in other words)."""
    if language not in PHRASES:
        raise ValueError(f"language must be one of {sorted(PHRASES)}")
    rng = random.Random(f"medsft-world:{seed}:{language}")
    kb, medical_train, trained, paraphrases, transfer = _medical(rng, language, n_diseases, 0.5, qa_phrasings,
                                                                 medical_repeats)
    names = {d["disease"] for d in kb} | {d["drug"] for d in kb}
    pool = item_pool(language, names, rng)
    general_train, general_probes = _general(rng, language, per_family, probes_per_family, fact_repeats, pool)
    # The same facts are probed as trained and as paraphrased, so the two accuracies compare like with like.
    chosen = random.Random(f"medsft-probes:{seed}").sample(range(len(trained)), min(probe_facts, len(trained)))
    transferred = random.Random(f"medsft-transfer:{seed}").sample(range(len(transfer)), min(probe_facts, len(transfer)))
    return World(
        language=language,
        seed=seed,
        general_train=general_train,
        general_probes=general_probes,
        medical_train=medical_train,
        medical_trained_probes=[trained[i] for i in chosen],
        medical_paraphrase_probes=[paraphrases[i] for i in chosen],
        medical_transfer_probes=[transfer[i] for i in transferred],
        diseases=kb,
    )
