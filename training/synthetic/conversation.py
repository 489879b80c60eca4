"""Conversation scripts: who says what, in which order, after which pause, with which overlap.

A script is plain data, independent of audio, so any renderer (the stage-2 simulator, or
`render_conversation` here) can turn it into a recording. Turn-taking statistics follow
`TurnTaking`: the same speaker often continues after a pause (the AAB / ABB patterns a
diarizer must not split by pause alone), listeners give short back-channels that may overlap
the speaker, speaker changes have 0.2-1.5 s gaps and sometimes overlap by up to about 1 s.
Turn durations are planned with `estimate_duration`; a rendering lasts within roughly 10 % of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise

import numpy as np

from .grammar import Grammar, Sentence
from .synthesis import SAMPLE_RATE, synthesize, utterance_jitter
from .voices import Speaker

# Fitted on 300 rendered train utterances (relative error: mean 1 %, std 10 %).
_SECONDS_PER_CHAR = 0.051
_SECONDS_PER_WORD = 0.053
_SECONDS_PER_UTTERANCE = 0.037
_SECONDS_PER_GAP_UNIT = 0.021
_SENTENCE_BREAK_S = 0.35  # espeak-ng's pause between two sentences of one turn
_DEFAULT_RATE = 160


@dataclass(frozen=True)
class TurnTaking:
    """Probabilities and ranges of the turn-taking process (seconds)."""

    continue_probability: float = 0.34  # same speaker again after a pause (AAB / ABB)
    backchannel_probability: float = 0.12  # a listener's short response
    overlap_probability: float = 0.12  # a speaker change starts before the previous turn ends
    backchannel_overlap_probability: float = 0.4
    two_sentence_probability: float = 0.2  # a turn of two sentences
    change_pause: tuple[float, float] = (0.2, 1.5)
    continue_pause: tuple[float, float] = (0.5, 1.5)  # long enough to be heard as a pause
    backchannel_pause: tuple[float, float] = (0.2, 0.6)
    overlap: tuple[float, float] = (0.2, 1.0)
    talkativeness_concentration: float = 2.0  # Dirichlet parameter: lower, more dominant speakers
    duration_tolerance: float = 0.1  # planned length within target * (1 +- tolerance)

    def __post_init__(self) -> None:
        total = self.continue_probability + self.backchannel_probability
        if not 0 <= total < 1:
            raise ValueError(f"continue_probability + backchannel_probability must be in [0, 1), got {total}")
        for name in ("change_pause", "continue_pause", "backchannel_pause", "overlap"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"TurnTaking.{name} must be a range 0 <= low <= high, got {(low, high)}")


@dataclass(frozen=True)
class Turn:
    """One planned turn. Exactly one of `pause_before` / `overlap` is non-zero (except the first turn).

    `pause_before`: silence between the end of everything said so far and this turn's start;
    `overlap`: how long this turn starts before that end.
    """

    speaker: str
    sentences: tuple[Sentence, ...]
    pause_before: float
    overlap: float
    estimated_duration: float
    is_backchannel: bool = False

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def spoken(self) -> str:
        return " ".join(s.spoken for s in self.sentences)


@dataclass(frozen=True)
class ConversationScript:
    """An ordered list of turns among `speakers`, planned to last about `target_duration` seconds."""

    speakers: tuple[str, ...]
    turns: tuple[Turn, ...]
    target_duration: float
    planned_starts: tuple[float, ...] = field(default=())

    @property
    def estimated_duration(self) -> float:
        return max(
            start + turn.estimated_duration
            for start, turn in zip(self.planned_starts, self.turns, strict=True)
        )

    @property
    def pattern(self) -> str:
        """Speaker sequence with letters in order of first appearance, e.g. "ABBAC"."""
        letters: dict[str, str] = {}
        return "".join(letters.setdefault(t.speaker, chr(ord("A") + len(letters))) for t in self.turns)

    def same_speaker_transitions(self) -> int:
        return sum(a.speaker == b.speaker for a, b in pairwise(self.turns))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ConversationScript:
        """Inverse of `to_dict` (extra keys such as an "id" are ignored)."""
        turns = tuple(
            Turn(
                t["speaker"],
                tuple(Sentence(**s) for s in t["sentences"]),
                t["pause_before"],
                t["overlap"],
                t["estimated_duration"],
                t["is_backchannel"],
            )
            for t in data["turns"]
        )
        return cls(tuple(data["speakers"]), turns, data["target_duration"], tuple(data["planned_starts"]))


def estimate_duration(text: str, speaker: Speaker | None = None) -> float:
    """Expected seconds of `text` (one or more sentences) rendered by `synthesize` for `speaker`."""
    rate = speaker.rate if speaker is not None else _DEFAULT_RATE
    speed = speaker.speed if speaker is not None else 1.0
    word_gap = speaker.word_gap if speaker is not None else 0
    words = text.split()
    chars = sum(len(w) for w in words)
    scale = (175.0 / rate) / speed
    seconds = (_SECONDS_PER_CHAR * chars + _SECONDS_PER_WORD * len(words) + _SECONDS_PER_UTTERANCE) * scale
    return seconds + _SECONDS_PER_GAP_UNIT * word_gap * max(len(words) - 1, 0)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return round(float(rng.uniform(*bounds)), 3)


def conversation_script(
    rng: np.random.Generator,
    speakers: Sequence[Speaker | str],
    num_speakers: int,
    target_duration: float,
    *,
    grammar: Grammar | None = None,
    split: str = "train",
    turn_taking: TurnTaking = TurnTaking(),
    duration_fn: Callable[[str, Speaker | None], float] = estimate_duration,
) -> ConversationScript:
    """Plan a conversation of `num_speakers` (2-4 typical) drawn from `speakers`, about `target_duration` s.

    Sentences come from `grammar` for `split`; `duration_fn(text, speaker)` estimates a turn's
    length (speaker is None when only ids are given). Every chosen speaker gets at least one turn.
    """
    if not 1 <= num_speakers <= len(speakers):
        raise ValueError(
            f"num_speakers must be between 1 and len(speakers)={len(speakers)}, got {num_speakers}"
        )
    if target_duration <= 0:
        raise ValueError(f"target_duration must be positive, got {target_duration}")
    grammar = grammar if grammar is not None else Grammar()
    chosen = [speakers[i] for i in rng.choice(len(speakers), size=num_speakers, replace=False)]
    ids = [s.id if isinstance(s, Speaker) else str(s) for s in chosen]
    if len(set(ids)) != len(ids):
        raise ValueError(f"speakers must have distinct ids, got {ids}")
    by_id = {i: (s if isinstance(s, Speaker) else None) for i, s in zip(ids, chosen, strict=True)}
    weights = rng.dirichlet([turn_taking.talkativeness_concentration] * num_speakers)
    low = target_duration * (1 - turn_taking.duration_tolerance)
    high = target_duration * (1 + turn_taking.duration_tolerance)

    turns: list[Turn] = []
    starts: list[float] = []
    end = 0.0
    unheard = list(ids)
    time_up = False
    while end < low or unheard:
        previous = turns[-1] if turns else None
        if time_up and not unheard:
            break  # nothing fits any more and everyone has spoken: a shorter session
        if end >= low or time_up:
            # Time is up but a chosen speaker has not spoken: a back-channel over the last turn.
            speaker = _next_speaker(rng, "change", previous, ids, weights, unheard, force=True)
            turn = _forced_backchannel(rng, grammar, speaker, by_id[speaker], previous, duration_fn)
            turns.append(turn)
            starts.append(round(_start_time(turn, end), 3))
            end = max(end, starts[-1] + turn.estimated_duration)
            unheard.remove(speaker)
            continue
        kind = _next_kind(rng, previous, turn_taking)
        # Leave room for every chosen speaker to get a turn before time runs out.
        force = bool(unheard) and previous is not None and high - end < 4.0 * len(unheard)
        if force:
            kind = "change"
        speaker = _next_speaker(rng, kind, previous, ids, weights, unheard, force)
        turn, start = None, 0.0
        for attempt in range(8):
            # Later attempts fall back to short content so that the plan lands inside the tolerance.
            candidate = _plan_turn(
                rng,
                grammar,
                split,
                kind,
                speaker,
                by_id[speaker],
                previous,
                turn_taking,
                duration_fn,
                short=attempt >= 4,
            )
            start = _start_time(candidate, end)
            if start + candidate.estimated_duration <= high or not turns:
                turn = candidate
                break
        if turn is None:
            if not unheard:
                break
            time_up = True  # nothing fits any more: only the forced back-channels remain
            continue
        turns.append(turn)
        starts.append(round(start, 3))
        end = max(end, start + turn.estimated_duration)
        if turn.speaker in unheard:
            unheard.remove(turn.speaker)
    return ConversationScript(tuple(ids), tuple(turns), float(target_duration), tuple(starts))


def _next_kind(rng: np.random.Generator, previous: Turn | None, tt: TurnTaking) -> str:
    if previous is None:
        return "first"
    u = rng.random()
    if u < tt.backchannel_probability and not previous.is_backchannel:
        return "backchannel"
    if u < tt.backchannel_probability + tt.continue_probability and not previous.is_backchannel:
        return "continue"
    return "change"


def _next_speaker(
    rng: np.random.Generator,
    kind: str,
    previous: Turn | None,
    ids: list[str],
    weights: np.ndarray,
    unheard: list[str],
    force: bool = False,
) -> str:
    if kind == "continue" and previous is not None:
        return previous.speaker
    candidates = [i for i in ids if previous is None or i != previous.speaker] or ids
    pending = [i for i in candidates if i in unheard]
    if pending and (force or rng.random() < 0.7):
        candidates = pending
    p = np.array([weights[ids.index(i)] for i in candidates])
    return candidates[rng.choice(len(candidates), p=p / p.sum())]


def _plan_turn(
    rng: np.random.Generator,
    grammar: Grammar,
    split: str,
    kind: str,
    speaker_id: str,
    speaker: Speaker | None,
    previous: Turn | None,
    tt: TurnTaking,
    duration_fn: Callable[[str, Speaker | None], float],
    short: bool,
) -> Turn:
    if kind == "backchannel" or (short and kind != "continue" and rng.random() < 0.5):
        sentences: tuple[Sentence, ...] = (grammar.backchannel(rng),)
    elif short:
        sentences = (min((grammar.sample(rng, split) for _ in range(6)), key=lambda s: s.num_words),)
    else:
        count = 2 if rng.random() < tt.two_sentence_probability else 1
        sentences = tuple(grammar.sample(rng, split) for _ in range(count))
    is_backchannel = sentences[0].is_backchannel
    text = " ".join(s.text for s in sentences)
    duration = duration_fn(text, speaker) + _SENTENCE_BREAK_S * (len(sentences) - 1)
    pause, overlap = 0.0, 0.0
    if previous is not None:
        if kind == "continue":
            pause = _uniform(rng, tt.continue_pause)
        elif is_backchannel:
            if rng.random() < tt.backchannel_overlap_probability:
                overlap = _uniform(rng, tt.overlap)
            else:
                pause = _uniform(rng, tt.backchannel_pause)
        elif rng.random() < tt.overlap_probability:
            overlap = _uniform(rng, tt.overlap)
        else:
            pause = _uniform(rng, tt.change_pause)
        # An overlap never swallows a whole turn: the turn order stays the order of start times.
        overlap = round(min(overlap, 0.5 * duration, 0.5 * previous.estimated_duration), 3)
    return Turn(speaker_id, sentences, pause, overlap, round(duration, 3), is_backchannel)


def _forced_backchannel(
    rng: np.random.Generator,
    grammar: Grammar,
    speaker_id: str,
    speaker: Speaker | None,
    previous: Turn | None,
    duration_fn: Callable[[str, Speaker | None], float],
) -> Turn:
    sentence = grammar.backchannel(rng)
    duration = duration_fn(sentence.text, speaker)
    overlap = 0.0 if previous is None else round(min(0.5 * duration, 0.5 * previous.estimated_duration), 3)
    return Turn(speaker_id, (sentence,), 0.0 if overlap else 0.2, overlap, round(duration, 3), True)


def _start_time(turn: Turn, end: float) -> float:
    return max(0.0, end + turn.pause_before - turn.overlap)


def render_conversation(
    script: ConversationScript,
    speakers: Mapping[str, Speaker],
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Minimal renderer: synthesise each turn and mix at the script's pauses and overlaps.

    Returns the 16 kHz mix and its turns `[{speaker, start, end, text}]` (seconds, sorted by
    start). No noise or reverberation: that is the stage-2 simulator's job. With `rng`, each
    turn gets the same small prosody jitter as corpus utterances.
    """
    missing = [s for s in script.speakers if s not in speakers]
    if missing:
        raise KeyError(f"render_conversation has no Speaker for ids {missing}")
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[dict] = []
    end = 0
    for turn in script.turns:
        pitch_offset, rate_factor = (0, 1.0) if rng is None else utterance_jitter(rng)
        audio = synthesize(turn.spoken, speakers[turn.speaker], pitch_offset, rate_factor)
        # Rendered lengths differ from the plan: re-apply the cap that keeps turns in start order.
        previous = len(pieces[-1][1]) if pieces else 0
        overlap = min(int(round(turn.overlap * SAMPLE_RATE)), len(audio) // 2, previous // 2)
        start = max(0, end + int(round(turn.pause_before * SAMPLE_RATE)) - overlap)
        pieces.append((start, audio))
        turns.append(
            {
                "speaker": turn.speaker,
                "start": start / SAMPLE_RATE,
                "end": (start + len(audio)) / SAMPLE_RATE,
                "text": turn.text,
            }
        )
        end = max(end, start + len(audio))
    mix = np.zeros(end, dtype=np.float32)
    for start, audio in pieces:
        mix[start : start + len(audio)] += audio
    peak = float(np.abs(mix).max(initial=0.0))
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix, turns
