"""Open-ended general chat for the real-model lab, answered by the base model itself.

The world's general records are closed questions in one template (its tiny model learns that
format from scratch). A real model's general SFT data (Alpaca, ShareGPT) is mostly open-ended:
explain, list, write, rewrite. Without such records a mix replays none of the behaviour the
built-in probes ask for (explanations, lists, notes, poems), so the real-model lab would judge the
remedies on general data no user trains with. The prompts below are of those kinds, on topics
the built-in probes do not use; their answers are the base model's own (greedy, only those it
finishes), standing in for a general set of the model's own quality. They are generated once per
base and cached beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medsft.lab.world import Item

FAMILY = "open"

_EXPLAIN_TOPICS = [
    "how a rainbow forms", "what inflation is", "how a bicycle stays upright", "what photosynthesis is",
    "how an airplane wing creates lift", "why the moon has phases", "what a budget is", "how a battery stores energy",
    "why leaves change color", "what an election is", "how bees make honey", "what gravity is",
    "how a compass works", "why we have seasons", "what a volcano is", "how bread rises",
    "what recycling is", "how a camera takes a picture", "why ice floats on water", "what a library card lets you do",
    "how tides happen", "what a noun is", "how the internet sends a message", "why exercise is good for you",
    "what a map scale means", "how a thermometer works", "what a haiku is", "why plants need sunlight",
    "how a savings account earns money", "what an echo is",
]
_EXPLAIN_FORMS = ["Explain {} in simple terms.", "Can you tell me {}? Keep it short and clear.", "Describe {}."]

_LIST_THEMES = [
    ("tips for studying for an exam", 5), ("ways to save money on groceries", 3), ("ideas for a rainy afternoon", 4),
    ("things to check before a long drive", 5), ("ways to keep a houseplant healthy", 3), ("tips for a job interview", 5),
    ("healthy breakfast ideas", 4), ("ways to make a small room feel bigger", 3), ("tips for learning a new language", 5),
    ("things to bring to a picnic", 4), ("ways to stay focused while working from home", 3),
    ("tips for writing a clear email", 4), ("ideas for a child's birthday party", 5), ("ways to reduce food waste", 3),
    ("tips for running your first 5 kilometres", 4), ("things to do before moving house", 5),
    ("ways to be kind to a new neighbour", 3), ("tips for keeping a kitchen clean", 4),
    ("board games for a family evening", 3), ("ways to remember people's names", 4),
]
_LIST_FORMS = ["List {n} {theme}.", "Give me {n} {theme}, one per line.", "What are {n} good {theme}?"]

_WRITING_TASKS = [
    "Write a short note congratulating a friend on a new job.", "Write a four-line poem about the sea.",
    "Write a polite email asking to move a dentist appointment to next week.",
    "Write a two-sentence story about a lost umbrella.", "Write a short birthday message for a grandmother.",
    "Write a four-line poem about a quiet winter morning.", "Write a brief apology to a friend for missing their call.",
    "Write a short welcome message for a new member of a book club.",
    "Write a polite note to a neighbour asking them to keep the noise down in the evening.",
    "Write a short product description for a blue ceramic coffee mug.",
    "Write a four-line poem about a city at night.", "Write a short invitation to a garden barbecue on Saturday.",
    "Write a brief thank-you message to a teacher at the end of the school year.",
    "Write a short review of a cosy cafe you enjoyed.", "Write a two-sentence story about a cat that learns to swim.",
    "Write a polite email asking a shop about the status of an order.",
    "Write a short speech opening a small town fair.", "Write a four-line poem about spring rain.",
    "Write a short message encouraging a friend before an exam.",
    "Write a brief out-of-office reply for a week of holiday.",
]

_REWRITES = [
    "we gotta finish this by friday or the boss will freak out", "thx for the help yesterday, u saved me",
    "can't make it tonight, something came up", "the printer's broken again, somebody fix it pls",
    "gonna be late, traffic is crazy", "lemme know if the plan works for you",
    "the meeting was kinda pointless tbh", "send me the pics from the trip when u can",
    "the food at that place was super good", "i dunno if i can help with the move this weekend",
]
_SUMMARIES = [
    "The library will close for two weeks in August while new shelves are installed. During that time, books can "
    "be returned to the drop box by the main door, and the online catalogue will stay open for reservations.",
    "A local bakery has started selling bread made with flour from a nearby farm. The owner says customers like "
    "knowing where their food comes from, and sales have grown every month since the change.",
    "The school football team won its final match of the season after being behind at half time. The coach "
    "praised the players for staying calm and said the win showed how much they had improved.",
    "Heavy rain flooded several streets in the town centre on Tuesday. The council closed two roads for the "
    "afternoon and asked drivers to avoid the area until the water drained away.",
    "A new bus route will connect the train station with the hospital from next month. Buses will run every "
    "twenty minutes during the day and every hour in the evening.",
    "Volunteers planted more than three hundred trees in the park over the weekend. Organisers hope the trees "
    "will provide shade in summer and a home for birds within a few years.",
]
_ERRANDS = [
    "return the library books, buy stamps, water the garden, book a haircut",
    "pick up the dry cleaning, call the plumber, buy bread, email the landlord",
    "renew the car insurance, buy a birthday card, clean the fridge, walk the dog",
    "post the parcel, buy batteries, pay the phone bill, tidy the garage",
    "book train tickets, buy vegetables, fix the bike tyre, phone the bank",
]


def open_prompts() -> list[str]:
    """The prompts, in a fixed order (every kind of open-ended task the built-in probes ask for)."""
    prompts = [form.format(topic) for topic in _EXPLAIN_TOPICS for form in _EXPLAIN_FORMS]
    prompts += [form.format(n=n, theme=theme) for theme, n in _LIST_THEMES for form in _LIST_FORMS]
    prompts += list(_WRITING_TASKS)
    prompts += [f'Rewrite this sentence in a more formal tone: "{s}"' for s in _REWRITES]
    prompts += [f'Summarize this in one sentence: "{text}"' for text in _SUMMARIES]
    prompts += [f"Turn these errands into a numbered to-do list: {errands}." for errands in _ERRANDS]
    return prompts


def open_general(model_path: Path, template: str, cache_dir: Path, max_new_tokens: int = 256, batch_size: int = 32,
                 log=print) -> list[Item]:
    """The prompts with the base model's own answers (those it finishes within max_new_tokens),
    generated on first use and cached in cache_dir by model, template and prompts."""
    prompts = open_prompts()
    config = Path(model_path) / "config.json"
    digest = hashlib.sha256("\x00".join([config.read_text(encoding="utf-8") if config.is_file() else str(model_path),
                                         template, str(max_new_tokens), *prompts]).encode("utf-8")).hexdigest()[:16]
    path = Path(cache_dir) / f"open-general-{digest}.jsonl"
    if not path.is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from medsft.data.templates import get_template
        from medsft.eval.generate import Chat, Sampling, generate_prompts

        log(f"the base model answers {len(prompts)} open-ended general prompts (first use; cached in {path})")
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        chat = Chat(tokenizer, get_template(template, tokenizer))
        answers = generate_prompts(model, chat, [chat.prompt(p) for p in prompts], Sampling(max_new_tokens),
                                   batch_size, label="open-ended general answers")
        rows = [{"question": p, "answer": a.text.strip(), "stopped": a.stopped} for p, a in zip(prompts, answers)]
        work = path.with_suffix(".partial")
        work.parent.mkdir(parents=True, exist_ok=True)
        work.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        work.replace(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [Item(FAMILY, r["question"], r["answer"], "") for r in rows if r["stopped"] and r["answer"]]
