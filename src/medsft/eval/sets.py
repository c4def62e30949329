"""The probe sets of a run or of `medsft eval`, from the recipe's `monitor` section."""

from __future__ import annotations

from medsft.eval import names
from medsft.eval.builtin import general_probes
from medsft.eval.probe_files import load_probe_file
from medsft.eval.probes import Probe, ProbeSet

BUILTIN = ("builtin", "builtin-en", "builtin-zh")
FILE_GROUPS = {"knowledge": names.KNOWLEDGE, "generation": names.PROBES, "choice": names.CHOICE}
SCORING = {"knowledge": "knowledge", "generation": "fact", "choice": "choice"}


def general_set(entries: list[str], limit: int | None = None) -> ProbeSet | None:
    """Built-in general probes and the user's generation files, the first `limit` of them."""
    probes: list[Probe] = []
    for entry in entries:
        if entry in BUILTIN:
            probes += general_probes(None if entry == "builtin" else entry.split("-")[1])
        else:
            probes += load_probe_file(entry, "generation").items
    probes = probes[:limit] if limit else probes
    return ProbeSet(names.GENERAL, probes, "fact") if probes else None


def domain_sets(held_out: dict[str, list], per_source: int) -> list[ProbeSet]:
    """Held-out records of each domain source (name -> conversations) asked as probes, scored by
    ROUGE-L against their answers. Single-turn records make clean probes."""
    sets = []
    for name, conversations in held_out.items():
        probes = [Probe(c.messages[0].content, None, c.messages[1].content)
                  for c in conversations[:per_source] if len(c.messages) == 2]
        if probes:
            sets.append(ProbeSet(names.set_name(names.DOMAIN, name), probes, "fact", rouge_l=True))
    return sets


def file_sets(paths: list[str]) -> list[ProbeSet]:
    """The user's probe files, knowledge first, then generation, then multiple choice."""
    loaded = [load_probe_file(path) for path in paths]
    order = list(FILE_GROUPS)
    loaded.sort(key=lambda f: order.index(f.kind))
    return [ProbeSet(names.set_name(FILE_GROUPS[f.kind], f.name), list(f.items), SCORING[f.kind]) for f in loaded]


def probe_sets(monitor, held_out: dict[str, list] | None = None) -> list[ProbeSet]:
    """Every set the monitor asks, from the recipe's monitor section. Files are read (and their
    errors raised) here, before any model loads."""
    general = general_set(monitor.general_probes, monitor.max_general_probes)
    return ([general] if general else []) + domain_sets(held_out or {}, monitor.domain_probes) \
        + file_sets(monitor.probe_files)
