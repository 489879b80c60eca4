"""Meeting-style English sentences from templates over a closed, documented vocabulary.

Text convention (the transcript): lower case ASCII letters, apostrophes and single spaces;
no punctuation; numbers, times, dates and money are written as words, exactly as espeak-ng
speaks them. Questions are marked on the `Sentence` (and get a "?" only in the string that
is sent to the synthesiser, for question intonation).

Template syntax (vocabulary/templates.txt): literal words, `{slot}`, `[optional part]`
(kept with probability 1/2), `(alternative one|alternative two)` (uniform), nesting allowed,
and a final ` ?` for questions. "a"/"an" are fixed to agree with the next word.

Splits: a sentence belongs to the test split when a hash of its text falls in the test
bucket (`TEST_SENTENCE_FRACTION`), so no train sentence can ever equal a test sentence, for
any seed. On top of that a fixed subset of templates (`HELD_OUT_TEMPLATE_FRACTION`, chosen by
a hash of the template line) is never used for training, so the test split also has unseen
sentence structures.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

VOCABULARY_DIR = Path(__file__).with_name("vocabulary")
MIN_WORDS = 4
MAX_WORDS = 20
TEST_SENTENCE_FRACTION = 0.1
HELD_OUT_TEMPLATE_FRACTION = 0.1
# Share of test sentences drawn from held-out templates (the rest: seen templates, unseen sentences).
HELD_OUT_TEMPLATE_SHARE_IN_TEST = 0.3
DISCOURSE_MARKER_PROBABILITY = 0.15
SPLITS = ("train", "test")

_TEXT_RE = re.compile(r"^[a-z']+( [a-z']+)*$")

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_ONES = (
    "_ first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()
_ORDINAL_TENS = {20: "twentieth", 30: "thirtieth"}
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
MONTHS = ("january february march april may june july august september october november december").split()

# Phrase slots, written in the template language itself.
_PHRASE_SLOTS = {
    "person": "({first}|{first}|{first}|{first} {last}|(mister|doctor|professor) {last})",
    "obj_or_person": "({obj}|{person})",
    "when_past": (
        "(yesterday|last week|last night|this morning|earlier today|on {day}|last {day}"
        "|in {month}|{small} (days|weeks|months) ago|a (week|month) ago)"
    ),
    "when_future": (
        "(today|tomorrow|later today|tonight|this afternoon|next week|on {day}|by {day}"
        "|by the end of the (day|week|month)|in {small} (days|weeks)|before the {event})"
    ),
    "date": (
        "({month} {ordinal}|the {ordinal} of {month}|{day} the {ordinal}|next {day}"
        "|the end of {month}|early {month}|mid {month})"
    ),
    "time": (
        "({hour} o'clock|{hour} {minute}|half past {hour}|quarter (past|to) {hour}|noon"
        "|midnight|{hour} in the (morning|afternoon|evening))"
    ),
    "duration": (
        "({small} (minutes|hours|days|weeks|months)|an hour|half an hour|a (day|week|month)"
        "|a few (minutes|hours|days|weeks)|(ten|fifteen|twenty|thirty|forty five|ninety) minutes)"
    ),
    "money": (
        "({num} (dollars|euros|pounds)|{num} thousand (dollars|euros|pounds)"
        "|{small} million (dollars|euros|pounds)|{num} (dollars|euros|pounds) and {pct_num} cents)"
    ),
    "percent": "({pct_num} percent|{digit} point {digit} percent)",
    "big": "({num} thousand|{small} hundred|{small} million|{num})",
    "num_hundred": "(ten|five|a hundred|twenty)",
    "period": "(week|month|quarter|year|sprint)",
    "topic_noun": "{obj}",
}

# Word-list slots: slot name -> vocabulary files it draws from.
_NOUN_SLOTS = {
    "work": ("nouns_work",),
    "tech": ("nouns_tech",),
    "obj": ("nouns_work", "nouns_tech"),
    "thing": ("nouns_everyday",),
    "food": ("nouns_food",),
    "animal": ("nouns_animals",),
    "role": ("nouns_roles",),
    "place": ("nouns_places",),
    "event": ("nouns_events",),
}
_VERB_SLOTS = {"vw": "verbs_work", "ve": "verbs_everyday", "vi": "verbs_intransitive"}
_VERB_FORMS = {"": 0, "_past": 1, "_pp": 2, "_ing": 3, "_3sg": 4}
_WORD_SLOTS = {
    "first": "names_first",
    "last": "names_last",
    "city": "places_cities",
    "country": "places_countries",
    "team": "nouns_teams",
    "project": "nouns_projects",
    "adj": "adjectives",
    "adv": "adverbs",
    "weather_adj": "adjectives_weather",
}


def normalize_text(text: str) -> str:
    """Map free text to the transcript convention: lower case, [a-z'] words, single spaces."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.split())


def is_normalized(text: str) -> bool:
    """Whether `text` already follows the transcript convention."""
    return bool(_TEXT_RE.match(text))


def number_to_words(n: int) -> str:
    """Cardinal number in words, British style ("one hundred and five"), for 0 <= n < 10**9."""
    if not 0 <= n < 10**9:
        raise ValueError(f"number_to_words supports 0 <= n < 10**9, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " and " + number_to_words(rest))
    for size, name in ((10**6, "million"), (1000, "thousand")):
        if n >= size:
            high, rest = divmod(n, size)
            words = number_to_words(high) + " " + name
            if rest == 0:
                return words
            return words + (" and " if rest < 100 else " ") + number_to_words(rest)
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Ordinal in words for 1 <= n <= 31 ("twenty first"), as used in dates."""
    if not 1 <= n <= 31:
        raise ValueError(f"ordinal_to_words supports 1..31, got {n}")
    if n < 20:
        return _ORDINAL_ONES[n]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return _ORDINAL_TENS[n]
    return _TENS[tens] + " " + _ORDINAL_ONES[ones]


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same on every machine and Python run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def sentence_split(text: str) -> str:
    """The split ("train" or "test") a sentence text belongs to, from a hash of the text."""
    return "test" if stable_hash("sentence:" + text) % 10_000 < TEST_SENTENCE_FRACTION * 10_000 else "train"


def _number_words(values: range, spell: Callable[[int], str] | None = None) -> Callable[[], set[str]]:
    return lambda: {w for n in values for w in (spell or number_to_words)(n).split()}


# The words each number slot can produce (for the closed vocabulary).
_NUMBER_SLOT_WORDS = {
    "num": _number_words(range(2, 1000)),
    "small": _number_words(range(2, 13)),
    "pct_num": _number_words(range(1, 100)),
    "digit": _number_words(range(1, 10)),
    "hour": _number_words(range(1, 13)),
    "minute": lambda: {"oh"} | _number_words(range(5, 60, 5))(),
    "ordinal": _number_words(range(1, 32), ordinal_to_words),
}


def plural_of(noun: str) -> str:
    """Regular English plural spelling."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def verb_forms(
    base: str, past: str | None = None, participle: str | None = None, ing: str | None = None
) -> tuple[str, str, str, str, str]:
    """(base, past, past participle, -ing form, third person singular) with regular defaults."""
    consonant_y = base.endswith("y") and base[-2:-1] not in tuple("aeiou")
    if past is None:
        past = base + "d" if base.endswith("e") else base[:-1] + "ied" if consonant_y else base + "ed"
    if participle is None:
        participle = past
    if ing is None:
        if base.endswith("ie"):
            ing = base[:-2] + "ying"
        elif base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
            ing = base[:-1] + "ing"
        else:
            ing = base + "ing"
    if base.endswith(("s", "x", "z", "ch", "sh", "o")):
        third = base + "es"
    elif consonant_y:
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    return base, past, participle, ing, third


def read_word_list(path: Path) -> list[list[str]]:
    """Entries of a vocabulary file: one list of fields per non-comment, non-empty line."""
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line.split())
    return entries


def _read_phrases(path: Path) -> list[str]:
    return [" ".join(fields) for fields in read_word_list(path)]


Node = tuple  # ("w", word) | ("s", slot) | ("alt", [seq, ...]) | ("opt", seq)

_TOKEN_RE = re.compile(r"\{\w+\}|[()\[\]|]|[a-z']+")


def parse_template(source: str) -> list[Node]:
    """Parse one template line into a sequence of nodes; raise ValueError on bad syntax."""
    text = source.strip()
    leftover = _TOKEN_RE.sub(" ", text).strip()
    if leftover:
        raise ValueError(f"template {source!r} has characters outside the syntax: {leftover!r}")
    tokens = _TOKEN_RE.findall(text)
    position = 0

    def parse_sequence(stops: str) -> list[Node]:
        nonlocal position
        sequence: list[Node] = []
        while position < len(tokens) and tokens[position] not in stops:
            token = tokens[position]
            position += 1
            if token == "(":
                options = [parse_sequence("|)")]
                while position < len(tokens) and tokens[position] == "|":
                    position += 1
                    options.append(parse_sequence("|)"))
                expect(")")
                sequence.append(("alt", options))
            elif token == "[":
                inner = parse_sequence("]")
                expect("]")
                sequence.append(("opt", inner))
            elif token in ")]|":
                raise ValueError(f"template {source!r}: unexpected {token!r}")
            elif token.startswith("{"):
                sequence.append(("s", token[1:-1]))
            else:
                sequence.append(("w", token))
        return sequence

    def expect(closing: str) -> None:
        nonlocal position
        if position >= len(tokens) or tokens[position] != closing:
            raise ValueError(f"template {source!r}: missing {closing!r}")
        position += 1

    sequence = parse_sequence("")
    if position != len(tokens):
        raise ValueError(f"template {source!r}: unbalanced {tokens[position]!r}")
    return sequence


def _leaves(nodes: Sequence[Node], kind: str) -> set[str]:
    """Values of all nodes of `kind` ("w": literal words, "s": slot names) anywhere in `nodes`."""
    found: set[str] = set()
    for node in nodes:
        if node[0] == kind:
            found.add(node[1])
        elif node[0] == "alt":
            for option in node[1]:
                found |= _leaves(option, kind)
        elif node[0] == "opt":
            found |= _leaves(node[1], kind)
    return found


def _literal_words(nodes: Sequence[Node]) -> set[str]:
    return _leaves(nodes, "w")


def _slot_names(nodes: Sequence[Node]) -> set[str]:
    return _leaves(nodes, "s")


def _takes_an(word: str) -> bool:
    """Whether "an" (not "a") goes before `word`, by its first sound."""
    if word.startswith(("hour", "honest", "honour", "heir")):
        return True
    if word.startswith(("uni", "use", "usu", "uti", "eu", "one", "once")):
        return False
    return word[0] in "aeiou"


def fix_articles(words: list[str]) -> list[str]:
    """Make each "a"/"an" agree with the word after it."""
    fixed = list(words)
    for i in range(len(fixed) - 1):
        if fixed[i] in ("a", "an"):
            fixed[i] = "an" if _takes_an(fixed[i + 1]) else "a"
    return fixed


@dataclass(frozen=True)
class Template:
    """One parsed template line."""

    index: int
    source: str
    nodes: tuple
    is_question: bool
    held_out: bool


@dataclass(frozen=True)
class Sentence:
    """A generated sentence: `text` is the transcript, `spoken` what is sent to espeak-ng."""

    text: str
    is_question: bool = False
    template: int = -1  # index into Grammar.templates; -1 for back-channels
    is_backchannel: bool = False

    @property
    def spoken(self) -> str:
        return self.text + ("?" if self.is_question else ".")

    @property
    def num_words(self) -> int:
        return len(self.text.split())


class Grammar:
    """Template grammar over the word lists in `vocabulary_dir` (see README.md)."""

    def __init__(self, vocabulary_dir: str | Path = VOCABULARY_DIR) -> None:
        self.vocabulary_dir = Path(vocabulary_dir)
        if not self.vocabulary_dir.is_dir():
            raise FileNotFoundError(f"vocabulary directory {self.vocabulary_dir} does not exist")
        self._lists: dict[str, list[tuple[str, ...]]] = {}
        self._slots: dict[str, Callable[[np.random.Generator], list[str]]] = {}
        self._build_word_slots()
        self._build_number_slots()
        self._phrases = {name: parse_template(source) for name, source in _PHRASE_SLOTS.items()}
        for name, nodes in self._phrases.items():
            self._slots[name] = self._phrase_sampler(nodes)
        self.backchannels = _read_phrases(self.vocabulary_dir / "backchannels.txt")
        self.discourse_markers = _read_phrases(self.vocabulary_dir / "discourse_markers.txt")
        self.templates = self._read_templates()
        self._shared_templates = [t for t in self.templates if not t.held_out]
        self._held_out_templates = [t for t in self.templates if t.held_out]
        if not self._shared_templates or not self._held_out_templates:
            raise ValueError(
                f"{self.vocabulary_dir / 'templates.txt'} needs both train and held-out templates"
            )

    def _words(self, stem: str) -> list[list[str]]:
        return read_word_list(self.vocabulary_dir / f"{stem}.txt")

    def _build_word_slots(self) -> None:
        for slot, stems in _NOUN_SLOTS.items():
            singular: list[tuple[str, ...]] = []
            plural: list[tuple[str, ...]] = []
            for stem in stems:
                for fields in self._words(stem):
                    singular.append((fields[0],))
                    if len(fields) == 1:
                        plural.append((plural_of(fields[0]),))
                    elif fields[1] != "-":
                        plural.append((fields[1],))
            self._add_list(slot, singular)
            self._add_list(slot + "_pl", plural)
        for slot, stem in _VERB_SLOTS.items():
            forms = [verb_forms(*fields[:4]) for fields in self._words(stem)]
            for suffix, index in _VERB_FORMS.items():
                self._add_list(slot + suffix, [(f[index],) for f in forms])
        for slot, stem in _WORD_SLOTS.items():
            self._add_list(slot, [tuple(fields) for fields in self._words(stem)])
        self._add_list("day", [(d,) for d in DAYS])
        self._add_list("month", [(m,) for m in MONTHS])

    def _add_list(self, slot: str, entries: list[tuple[str, ...]]) -> None:
        # Sorted and de-duplicated so that the draw depends on the word set, not the file order.
        unique = sorted(set(entries))
        if not unique:
            raise ValueError(f"slot {slot!r} has no words in {self.vocabulary_dir}")
        self._lists[slot] = unique
        self._slots[slot] = lambda rng, words=unique: list(words[rng.integers(len(words))])

    def _build_number_slots(self) -> None:
        def num(rng: np.random.Generator) -> list[str]:
            u = rng.random()
            value = (
                rng.integers(2, 21)
                if u < 0.45
                else rng.integers(21, 100)
                if u < 0.75
                else rng.integers(100, 1000)
            )
            return number_to_words(int(value)).split()

        def minute(rng: np.random.Generator) -> list[str]:
            value = int(rng.integers(1, 12)) * 5
            return (["oh"] if value < 10 else []) + number_to_words(value).split()

        self._slots.update(
            {
                "num": num,
                "small": lambda rng: number_to_words(int(rng.integers(2, 13))).split(),
                "pct_num": lambda rng: number_to_words(int(rng.integers(1, 100))).split(),
                "digit": lambda rng: number_to_words(int(rng.integers(1, 10))).split(),
                "hour": lambda rng: number_to_words(int(rng.integers(1, 13))).split(),
                "minute": minute,
                "ordinal": lambda rng: ordinal_to_words(int(rng.integers(1, 32))).split(),
            }
        )

    def _phrase_sampler(self, nodes: list[Node]) -> Callable[[np.random.Generator], list[str]]:
        return lambda rng: self.expand(nodes, rng)

    def _read_templates(self) -> list[Template]:
        path = self.vocabulary_dir / "templates.txt"
        if not path.is_file():
            raise FileNotFoundError(f"template file {path} does not exist")
        templates = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            is_question = line.endswith("?")
            source = line.rstrip("?").strip()
            nodes = parse_template(source)
            unknown = _slot_names(nodes) - set(self._slots)
            if unknown:
                raise ValueError(f"template {line!r} in {path} uses unknown slots {sorted(unknown)}")
            held_out = stable_hash("template:" + source) % 1000 < HELD_OUT_TEMPLATE_FRACTION * 1000
            templates.append(Template(len(templates), source, tuple(nodes), is_question, held_out))
        return templates

    def expand(self, nodes: Sequence[Node], rng: np.random.Generator) -> list[str]:
        """Words of one random expansion of parsed template `nodes`."""
        words: list[str] = []
        for node in nodes:
            kind = node[0]
            if kind == "w":
                words.append(node[1])
            elif kind == "s":
                words.extend(self._slots[node[1]](rng))
            elif kind == "alt":
                words.extend(self.expand(node[1][rng.integers(len(node[1]))], rng))
            elif rng.random() < 0.5:
                words.extend(self.expand(node[1], rng))
        return words

    def words_of(self, slot: str) -> list[str]:
        """The phrases a word-list slot can produce (e.g. "first", "obj_pl", "vw_past")."""
        if slot not in self._lists:
            raise KeyError(f"{slot!r} is not a word-list slot; known: {sorted(self._lists)}")
        return [" ".join(entry) for entry in self._lists[slot]]

    def sample(self, rng: np.random.Generator, split: str = "train", max_tries: int = 1000) -> Sentence:
        """One sentence of `split`: a fresh template expansion whose text hashes into that split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for _ in range(max_tries):
            if split == "test" and rng.random() < HELD_OUT_TEMPLATE_SHARE_IN_TEST:
                pool = self._held_out_templates
            else:
                pool = self._shared_templates
            template = pool[rng.integers(len(pool))]
            words = self.expand(template.nodes, rng)
            if rng.random() < DISCOURSE_MARKER_PROBABILITY:
                words = self.discourse_markers[rng.integers(len(self.discourse_markers))].split() + words
            words = fix_articles(words)
            if not MIN_WORDS <= len(words) <= MAX_WORDS:
                continue
            text = " ".join(words)
            if sentence_split(text) == split:
                return Sentence(text, template.is_question, template.index)
        raise RuntimeError(f"no {split} sentence found in {max_tries} tries; check {self.vocabulary_dir}")

    def sample_unique(
        self, rng: np.random.Generator, count: int, split: str = "train", exclude: set[str] | None = None
    ) -> list[Sentence]:
        """`count` sentences of `split` with pairwise distinct texts (none of them in `exclude`)."""
        seen = set() if exclude is None else set(exclude)
        sentences = []
        while len(sentences) < count:
            sentence = self.sample(rng, split)
            if sentence.text not in seen:
                seen.add(sentence.text)
                sentences.append(sentence)
        return sentences

    def backchannel(self, rng: np.random.Generator) -> Sentence:
        """A short listener response ("uh huh", "okay sure"); shared by both splits."""
        return Sentence(self.backchannels[rng.integers(len(self.backchannels))], is_backchannel=True)

    def reachable_words(self, templates: Sequence[Template]) -> frozenset[str]:
        """Every word that expansions of `templates` can produce (through all their slots)."""
        words: set[str] = set()
        pending: list[str] = []
        for template in templates:
            words |= _literal_words(template.nodes)
            pending.extend(_slot_names(template.nodes))
        done: set[str] = set()
        while pending:
            slot = pending.pop()
            if slot in done:
                continue
            done.add(slot)
            if slot in self._phrases:
                words |= _literal_words(self._phrases[slot])
                pending.extend(_slot_names(self._phrases[slot]))
            elif slot in self._lists:
                words.update(w for entry in self._lists[slot] for w in entry)
            else:
                words.update(_NUMBER_SLOT_WORDS[slot]())
        return frozenset(w for phrase in words for w in phrase.split())

    @cached_property
    def vocabulary(self) -> frozenset[str]:
        """Every word a generated sentence or back-channel can contain (the closed vocabulary)."""
        extra = {w for phrase in self.backchannels + self.discourse_markers for w in phrase.split()}
        return self.reachable_words(self.templates) | extra | {"a", "an"}

    @cached_property
    def train_vocabulary(self) -> frozenset[str]:
        """The words train sentences can contain: all of `vocabulary` unless templates.txt is unbalanced."""
        extra = {w for phrase in self.backchannels + self.discourse_markers for w in phrase.split()}
        return self.reachable_words(self._shared_templates) | extra | {"a", "an"}
