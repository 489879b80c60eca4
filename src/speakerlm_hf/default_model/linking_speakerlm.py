"""Speakers by voice: turns relabelled by their own audio, and linking across the segments of a long recording.

Once a segment's turns have times (`pipeline_speakerlm.place_turns`), `relabel_turns` gives each
turn the speaker its own audio sounds like: every turn is embedded with the model's frozen speaker
extractor; a turn the model gave a registered name takes the registered speaker its voice matches
(cosine, with each speaker's share of the segment's turns fitted by EM, so that enrolled people
who hardly speak do not draw turns from the ones they resemble), and the anonymous turns are
clustered agglomeratively into `spk0`, `spk1`, ... A whole turn is several seconds of one voice,
against the 1.5 s windows that steer the labels while decoding. Before that, `split_turns` cuts a
turn between two words where its voice changes (a line that holds two people).

The model labels anonymous speakers `spk0`, `spk1`, ... afresh in every segment. To keep one label
per person over the whole recording, each local speaker of each segment is embedded from its own
turns' audio (with the model's frozen speaker extractor), and all these (segment, local speaker)
embeddings are clustered: agglomerative, average linkage on cosine similarity, where two local
speakers of the same segment never merge. Registered speakers keep their names.

Remote code: shipped to the Hub next to the model, so it imports only torch, numpy and the
standard library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from .audio_frontend import speaker_features
from .configuration_speakerlm import voice_threshold_settings
from .feature_extraction_speakerlm import SAMPLING_RATE
from .segmentation_speakerlm import FRAMES_PER_SECOND, mask_runs

DEFAULT_THRESHOLD = 0.5
# A speaker's audio shorter than this is tiled up to it (the extractor needs some context), and its
# embedding only joins clusters formed by the others.
MIN_CLIP_SECONDS = 0.5
RELIABLE_SECONDS = 1.0
MAX_CLIP_SECONDS = 30.0
MAX_PIECE_SECONDS = 10.0
# Relabelling a segment's turns by voice (`relabel_turns`): two anonymous turns are one speaker
# above this cosine similarity (average linkage over turns, higher than linking's threshold over
# whole speakers, since one turn is less audio); registered speakers are scored by
# softmax(REGISTERED_SHARPNESS * cosine) with fitted shares; a named turn whose best registered
# speaker is below MIN_REGISTERED_SIMILARITY is taken for someone not registered.
RELABEL_THRESHOLD = 0.75
# Cutting a turn where the voice changes (`split_turns`): windows of SPLIT_WINDOW_SECONDS every
# SPLIT_HOP_SECONDS, at least MIN_SPLIT_SECONDS on either side of a cut, and the windows of the
# SPLIT_CONTEXT_SECONDS before and after a cut less similar than the `split` threshold (-1, the
# default, never cuts: the cosine depends on the extractor, so a model calibrates its own in
# `config.voice_thresholds`).
SPLIT_THRESHOLD = -1.0
SPLIT_WINDOW_SECONDS = 1.5
SPLIT_HOP_SECONDS = 0.25
MIN_SPLIT_SECONDS = 1.5
SPLIT_CONTEXT_SECONDS = 3.0
REGISTERED_SHARPNESS = 20.0
MIN_REGISTERED_SIMILARITY = 0.3
# An anonymous turn of under RELIABLE_SECONDS (at least MIN_CLIP_SECONDS) whose voice is less
# similar than this to every speaker of the longer turns is someone else (`relabel_turns`); -1, the
# default, always lets it join one (the cosine depends on the extractor, as `split`'s).
SHORT_THRESHOLD = -1.0

Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]
# (clip, window centres in seconds, window seconds) -> (windows, embedding): windows of one clip
WindowEmbedder = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class VoiceThresholds:
    """The cosine similarities at which voices count as one speaker. They belong to the speaker
    extractor: another extractor spreads the same voices over other cosines, so a model carries
    its own in `config.voice_thresholds` (missing keys take these defaults, chosen with
    SpeakerLM-Tiny's first extractor).

    cluster: without registration, the recording's voice windows are clustered down to this while
        decoding (`CTCPrefixScorer`'s `cluster_threshold`).
    link: the anonymous speakers of the segments of a long recording are linked above this.
    relabel: two anonymous turns of a segment are one speaker above this (`relabel_turns`).
    split: a turn is cut between two words where the voice before and after is less similar than
        this (`split_turns`; -1 never cuts).
    registered: a turn the model gave a registered name whose best registered speaker is under
        this is taken for someone not registered.
    short: an anonymous turn of under a second (`RELIABLE_SECONDS`) whose voice is less similar
        than this to every speaker the longer turns make is a speaker of its own (-1 never).
    """

    cluster: float = DEFAULT_THRESHOLD
    link: float = DEFAULT_THRESHOLD
    relabel: float = RELABEL_THRESHOLD
    registered: float = MIN_REGISTERED_SIMILARITY
    split: float = SPLIT_THRESHOLD
    short: float = SHORT_THRESHOLD

    def __post_init__(self):
        for key, value in voice_threshold_settings(self.to_dict()).items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, values: Mapping | None) -> VoiceThresholds:
        """From a dict of `VOICE_THRESHOLD_KEYS` (any subset; None: all defaults)."""
        return cls() if values is None else cls(**voice_threshold_settings(values))

    @classmethod
    def from_config(cls, config) -> VoiceThresholds:
        """The thresholds of a model's config (`voice_thresholds`; defaults where it has none)."""
        return cls.from_dict(getattr(config, "voice_thresholds", None))

    def to_dict(self) -> dict[str, float]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


DEFAULT_VOICE_THRESHOLDS = VoiceThresholds()


def turn_span(turn: Mapping, duration: float) -> tuple[float, float]:
    """A turn's (start, end) in seconds within a segment of `duration`, or the whole segment when its
    times are missing, unparsable or out of order."""
    try:
        start, end = float(turn["start"]), float(turn["end"])
    except (KeyError, TypeError, ValueError):
        return 0.0, duration
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start or start >= duration:
        return 0.0, duration
    return max(0.0, start), min(end, duration)


def anonymous_labels(turns: Sequence[Mapping], registered: Sequence[str] = ()) -> list[str]:
    """Labels of the turns that are not registered names, in order of first appearance."""
    known = set(registered)
    return list(dict.fromkeys(t["speaker"] for t in turns if t["speaker"] not in known))


def speaker_clips(
    waveform: np.ndarray,
    turns: Sequence[Mapping],
    registered: Sequence[str] = (),
    speech_mask: np.ndarray | None = None,
    sampling_rate: int = SAMPLING_RATE,
) -> dict[str, tuple[np.ndarray, float]]:
    """The audio of each anonymous speaker of a segment and how many seconds of it are its own speech.

    A speaker's audio is its turns without the stretches other turns overlap and without the
    frames the VAD found silent; when that leaves under `MIN_CLIP_SECONDS`, overlap and then
    silence are allowed back. At most `MAX_CLIP_SECONDS` are kept.
    """
    duration = waveform.size / sampling_rate
    num_frames = max(1, math.ceil(duration * FRAMES_PER_SECOND))
    hop = sampling_rate // FRAMES_PER_SECOND
    owned: dict[str, np.ndarray] = {}
    for turn in turns:
        start, end = turn_span(turn, duration)
        mask = owned.setdefault(turn["speaker"], np.zeros(num_frames, dtype=bool))
        mask[math.floor(start * FRAMES_PER_SECOND) : math.ceil(end * FRAMES_PER_SECOND)] = True
    talkers = sum(mask.astype(np.int32) for mask in owned.values()) if owned else np.zeros(num_frames)
    speech = np.ones(num_frames, dtype=bool)
    if speech_mask is not None:
        speech[: min(num_frames, speech_mask.size)] = speech_mask[:num_frames]
    clips = {}
    for label in anonymous_labels(turns, registered):
        own = owned[label]
        for chosen in (own & speech & (talkers == 1), own & speech, own):
            if chosen.sum() >= MIN_CLIP_SECONDS * FRAMES_PER_SECOND:
                break
        runs = mask_runs(chosen).tolist()
        clip = (
            np.concatenate([waveform[start * hop : end * hop] for start, end in runs]) if runs else waveform
        )
        clip = clip[: int(MAX_CLIP_SECONDS * sampling_rate)]
        seconds = clip.size / sampling_rate
        minimum = int(MIN_CLIP_SECONDS * sampling_rate)
        if 0 < clip.size < minimum:
            clip = np.resize(clip, minimum)
        clips[label] = (clip, seconds)
    return clips


def local_speaker_embeddings(
    waveform: np.ndarray,
    turns: Sequence[Mapping],
    embed: Embedder,
    registered: Sequence[str] = (),
    speech_mask: np.ndarray | None = None,
) -> dict[str, dict]:
    """`{label: {"embedding", "duration"}}` for the anonymous speakers of one segment (16 kHz audio)."""
    clips = speaker_clips(waveform, turns, registered, speech_mask)
    if not clips:
        return {}
    vectors = np.asarray(embed([clip for clip, _ in clips.values()]), dtype=np.float32)
    return {
        label: {"embedding": vector, "duration": seconds}
        for (label, (_, seconds)), vector in zip(clips.items(), vectors, strict=True)
    }


def model_embedder(model: torch.nn.Module, piece_seconds: float = MAX_PIECE_SECONDS) -> Embedder:
    """Embeddings from the model's frozen speaker extractor (`model.speaker_encoder`).

    A clip longer than `piece_seconds` is cut into equal pieces whose embeddings are averaged, as
    enrollment clips are; pieces go through the extractor one at a time, which bounds its memory.
    """
    encoder = model.speaker_encoder
    parameter = next(encoder.parameters())
    piece_samples = int(piece_seconds * SAMPLING_RATE)

    def embed(clips: Sequence[np.ndarray]) -> np.ndarray:
        vectors = []
        with torch.no_grad():
            for clip in clips:
                pieces = np.array_split(clip, max(1, math.ceil(clip.size / piece_samples)))
                embeddings = [
                    encoder(speaker_features(piece)[None].to(parameter.device, parameter.dtype))[0].float()
                    for piece in pieces
                ]
                vectors.append(torch.stack(embeddings).mean(0).cpu())
        return torch.stack(vectors).numpy()

    return embed


def model_window_embedder(model: torch.nn.Module) -> WindowEmbedder | None:
    """Windows of a clip embedded with the model's frozen speaker extractor in one pass: the
    extractor runs once over the clip and each window pools its frames' statistics
    (`windowed_embeddings`, as the audio tokens' speaker windows are made). None for an extractor
    without it (ERes2NetV2): `split_turns` then embeds each window as a clip of its own."""
    encoder = model.speaker_encoder
    if not hasattr(encoder, "windowed_embeddings"):
        return None
    parameter = next(encoder.parameters())

    def embed(clip: np.ndarray, centers: np.ndarray, window: float) -> np.ndarray:
        features = speaker_features(clip)[None].to(parameter.device, parameter.dtype)
        frames = torch.tensor([features.shape[1]], device=parameter.device)
        # fbank frames are 10 ms
        where = torch.as_tensor(np.asarray(centers, dtype=np.float32) * 100, device=parameter.device)[None]
        with torch.no_grad():
            vectors = encoder.windowed_embeddings(features, frames, where, round(window * 100))[0]
        return vectors.float().cpu().numpy()

    return embed


def turn_embeddings(
    waveform: np.ndarray,
    turns: Sequence[Mapping],
    embed: Embedder,
    speech_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each turn's voice: (embeddings (turns, size), seconds of audio behind each), from the turn's
    own audio as `speaker_clips` cuts a speaker's (other turns' overlap and silence left out while
    enough remains)."""
    if not turns:
        return np.zeros((0, 0)), np.zeros(0)
    # each turn as a speaker of its own
    keyed = [{**turn, "speaker": str(number)} for number, turn in enumerate(turns)]
    voices = local_speaker_embeddings(waveform, keyed, embed, (), speech_mask)
    chosen = [voices[str(number)] for number in range(len(turns))]
    vectors = np.stack([entry["embedding"] for entry in chosen]).astype(np.float64)
    return vectors, np.array([entry["duration"] for entry in chosen], dtype=np.float64)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def registered_assignment(
    similarity: np.ndarray, seconds: np.ndarray, sharpness: float = REGISTERED_SHARPNESS, rounds: int = 30
) -> np.ndarray:
    """Index of the registered speaker of each turn from the (turns, speakers) cosine similarities.

    Each speaker's share of the turns' seconds is fitted by EM under turn posteriors
    softmax(sharpness * cosine + log share); a turn takes its most probable speaker under the
    fitted shares, so a registered voice that only resembles the others' wins no turn from them."""
    similarity = np.asarray(similarity, dtype=np.float64)
    weights = np.maximum(np.asarray(seconds, dtype=np.float64), 0.05)
    log_shares = np.full(similarity.shape[1], -np.log(similarity.shape[1]))
    for _ in range(rounds):
        scores = sharpness * similarity + log_shares
        posteriors = np.exp(scores - scores.max(axis=1, keepdims=True))
        posteriors /= posteriors.sum(axis=1, keepdims=True)
        log_shares = np.log(np.maximum(weights @ posteriors / weights.sum(), 1e-12))
    return np.argmax(sharpness * similarity + log_shares, axis=1)


def join_touching(turns: Sequence[dict]) -> list[dict]:
    """Timed turns with each turn that starts before the same speaker's previous turn ends (no pause
    between their words) joined to it."""
    joined: list[dict] = []
    for turn in turns:
        previous = joined[-1] if joined else None
        if previous and previous["speaker"] == turn["speaker"] and turn["start"] <= previous["end"]:
            previous["text"] = f"{previous['text']} {turn['text']}".strip()
            previous["end"] = max(previous["end"], turn["end"])
            if "_words" in previous:
                previous["_words"] = previous["_words"] + turn.get("_words", [])
        else:
            joined.append(turn)
    return joined


def voice_cuts(
    times: Sequence[tuple[float, float]],
    spans: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    first: int,
    stop: int,
    begin: float,
    finish: float,
) -> list[int]:
    """Where `split_turns` cuts the words [first, stop) said from `begin` to `finish` (seconds):
    the indices of the words that start a new part, in order. `times` are the words' (start, end),
    `spans` the windows' (start, end) seconds, (windows, 2), and `vectors` their unit embeddings."""
    hop, context = SPLIT_HOP_SECONDS, SPLIT_CONTEXT_SECONDS
    lefts, rights = spans[:, 0], spans[:, 1]
    best, where = threshold, None
    for k in range(first + 1, stop):
        pause = 0.5 * (times[k - 1][1] + times[k][0])
        if pause - begin < MIN_SPLIT_SECONDS or finish - pause < MIN_SPLIT_SECONDS:
            continue
        before = (lefts >= max(begin, pause - context) - 1e-6) & (rights <= pause + hop)
        after = (lefts >= pause - hop) & (rights <= min(finish, pause + context) + 1e-6)
        if before.sum() < 2 or after.sum() < 2:
            continue
        similarity = float(unit_rows(vectors[before].mean(0)) @ unit_rows(vectors[after].mean(0)))
        if similarity < best:
            best, where = similarity, k
    if where is None:
        return []
    pause = 0.5 * (times[where - 1][1] + times[where][0])
    return [
        *voice_cuts(times, spans, vectors, threshold, first, where, begin, pause),
        where,
        *voice_cuts(times, spans, vectors, threshold, where, stop, pause, finish),
    ]


def split_turns(
    turns: Sequence[dict],
    waveform: np.ndarray,
    embed: Embedder,
    threshold: float = SPLIT_THRESHOLD,
    speech_mask: np.ndarray | None = None,
    padding: float = 0.0,
    sampling_rate: int = SAMPLING_RATE,
    embed_windows: WindowEmbedder | None = None,
) -> list[dict]:
    """Timed turns cut between two words where the voice changes: a line of the transcript may hold
    two people (the model missed a turn change), and relabelling by voice gives a whole line one
    speaker. A turn needs its words' times (`"_words"`, as `pipeline_speakerlm.place_turns` gives
    them, one per whitespace-separated word of its text; other turns stay whole).

    Windows of `SPLIT_WINDOW_SECONDS` every `SPLIT_HOP_SECONDS` along the turn (those at least half
    speech by `speech_mask`) are embedded, by `embed_windows` in one pass over the turn's audio
    when given, else each by `embed`; at each pause between two words with at least
    `MIN_SPLIT_SECONDS` of the turn on either side, the mean direction of the windows in the
    `SPLIT_CONTEXT_SECONDS` before it is compared with that of the windows in as many seconds after
    it (near the pause, so that a voice that comes back later does not hide the change), and the
    turn is cut at the least similar pause when that cosine is under `threshold`; each part is then
    searched again. The parts keep the turn's speaker (relabelling gives them theirs) and its outer
    times; inner cuts sit `padding` seconds outside the words on each side. Returns new turn dicts
    without `"_words"`."""
    if threshold <= -1.0:
        return [{key: value for key, value in turn.items() if key != "_words"} for turn in turns]
    duration = waveform.size / sampling_rate
    window, hop = SPLIT_WINDOW_SECONDS, SPLIT_HOP_SECONDS
    plans = []  # (turn, words, word times, window spans (windows, 2), turn start, turn end)
    clips: list[np.ndarray] = []
    found: list[np.ndarray] = []  # window embeddings by `embed_windows`, turn by turn
    for turn in turns:
        times, words = turn.get("_words"), turn["text"].split()
        start, end = turn_span(turn, duration)
        if not times or len(times) != len(words) or len(words) < 2 or end - start < 2 * MIN_SPLIT_SECONDS:
            plans.append((turn, None, None, None, start, end))
            continue
        spans = []
        for left in np.arange(start, end - window + 1e-6, hop):
            first, stop = int(left * FRAMES_PER_SECOND), int((left + window) * FRAMES_PER_SECOND)
            heard = speech_mask[first:stop] if speech_mask is not None else None
            if heard is not None and (not heard.size or heard.mean() < 0.5):
                continue
            spans.append((float(left), float(left + window)))
            if embed_windows is None:
                clips.append(waveform[int(left * sampling_rate) : int((left + window) * sampling_rate)])
        if embed_windows is not None and spans:
            centers = np.array([a + window / 2 for a, _ in spans]) - start
            found.append(
                embed_windows(
                    waveform[int(start * sampling_rate) : int(end * sampling_rate)], centers, window
                )
            )
        plans.append((turn, words, times, np.array(spans, dtype=np.float64).reshape(-1, 2), start, end))
    if found:
        vectors = unit_rows(np.concatenate(found))
    else:
        vectors = unit_rows(embed(clips)) if clips else np.zeros((0, 0))
    out: list[dict] = []
    used = 0
    for turn, words, times, spans, start, end in plans:
        bare = {key: value for key, value in turn.items() if key != "_words"}
        if spans is None:
            out.append(bare)
            continue
        own = vectors[used : used + len(spans)]
        used += len(spans)
        cuts = voice_cuts(times, spans, own, threshold, 0, len(words), start, end)
        bounds = [0, *cuts, len(words)]
        for number, (first, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            piece = {**bare, "text": " ".join(words[first:stop])}
            if number:
                piece["start"] = round(max(start, times[first][0] - padding), 3)
            if stop < len(words):
                piece["end"] = round(min(end, times[stop - 1][1] + padding), 3)
            out.append(piece)
    return out


def relabel_turns(
    turns: Sequence[Mapping],
    vectors: np.ndarray,
    seconds: Sequence[float],
    registered: Mapping[str, np.ndarray] | None = None,
    threshold: float = RELABEL_THRESHOLD,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    min_registered_similarity: float = MIN_REGISTERED_SIMILARITY,
    short_threshold: float = SHORT_THRESHOLD,
) -> list[dict]:
    """A segment's timed turns with the speakers their voices (`turn_embeddings`) say, touching turns
    of one speaker then joined (`join_touching`).

    Turns the model gave a registered name are assigned among the `registered` speakers' raw
    embeddings (`registered_assignment`); one whose best match is under `min_registered_similarity`
    joins the anonymous turns. The anonymous turns are clustered (`cluster_embeddings`, average
    linkage above `threshold`; a turn of under a second starts a speaker of its own when no other
    is `short_threshold` similar to it) and named `spk0`, `spk1`, ... in order of first appearance;
    `min_speakers` / `max_speakers` count everyone, the registered speakers found included."""
    if not turns:
        return []
    vectors, seconds = unit_rows(vectors), np.asarray(seconds, dtype=np.float64)
    registered = dict(registered or {})
    labels: list[str | None] = [None] * len(turns)
    named = [number for number, turn in enumerate(turns) if turn["speaker"] in registered]
    if named:
        names = list(registered)
        voices = unit_rows(
            np.stack([np.asarray(registered[name], dtype=np.float64).ravel() for name in names])
        )
        similarity = vectors[named] @ voices.T
        chosen = registered_assignment(similarity, seconds[named])
        for row, (number, index) in enumerate(zip(named, chosen.tolist(), strict=True)):
            if similarity[row, index] >= min_registered_similarity:
                labels[number] = names[index]
    anonymous = [number for number, label in enumerate(labels) if label is None]
    if anonymous:
        found = len({label for label in labels if label is not None})
        lower, upper = speaker_bounds(None, min_speakers, max_speakers, found)
        clusters = cluster_embeddings(
            vectors[anonymous],
            list(range(len(anonymous))),
            seconds[anonymous],
            threshold,
            lower,
            upper,
            short_threshold=short_threshold,
        )
        for number, cluster in zip(anonymous, clusters.tolist(), strict=True):
            labels[number] = f"spk{cluster}"
    return join_touching([{**turn, "speaker": label} for turn, label in zip(turns, labels, strict=True)])


def cluster_embeddings(
    embeddings: np.ndarray,
    groups: Sequence[int],
    durations: Sequence[float] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_clusters: int = 1,
    max_clusters: int | None = None,
    reliable_duration: float = RELIABLE_SECONDS,
    short_threshold: float | None = None,
) -> np.ndarray:
    """Cluster ids (0, 1, ... in order of first item) of embeddings, none sharing a cluster with its group.

    Embeddings with at least `reliable_duration` seconds of audio are clustered agglomeratively
    (average linkage of cosine similarity, weighted by duration): merging goes on while the best
    pair is at least `threshold` similar and more than `min_clusters` remain, and past the
    threshold while more than `max_clusters` remain. Pairs with members of one group are never
    merged, so a bound may be missed when a group has more members than it allows. Shorter
    embeddings then join, longest first, the most similar cluster that has no member of their
    group, or start one: when there is none, or (with `short_threshold`, for one of at least
    MIN_CLIP_SECONDS while fewer than `max_clusters` exist) when the most similar is less similar
    than `short_threshold`.
    """
    vectors = unit_rows(embeddings)
    count = vectors.shape[0]
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    groups = np.asarray(groups)
    weights = (
        np.ones(count) if durations is None else np.maximum(np.asarray(durations, dtype=np.float64), 1e-3)
    )
    similarity = vectors @ vectors.T
    strong = weights >= reliable_duration if durations is not None else np.ones(count, dtype=bool)
    if not strong.any():
        strong[:] = True
    upper = math.inf if max_clusters is None else max(1, max_clusters)
    lower = min(max(1, min_clusters), upper)

    index = np.flatnonzero(strong)
    linkage = similarity[np.ix_(index, index)].copy()
    conflict = groups[index][:, None] == groups[index][None, :]
    mass = weights[index].copy()
    members = [[int(i)] for i in index]
    alive = np.ones(index.size, dtype=bool)
    scores = np.where(conflict, -np.inf, linkage)
    clusters = index.size
    while clusters > lower:
        best = int(np.argmax(scores))
        a, b = divmod(best, index.size)
        if not np.isfinite(scores[a, b]) or (clusters <= upper and scores[a, b] < threshold):
            break
        linkage[a] = (mass[a] * linkage[a] + mass[b] * linkage[b]) / (mass[a] + mass[b])
        linkage[:, a] = linkage[a]
        conflict[a] |= conflict[b]
        conflict[:, a] = conflict[a]
        mass[a] += mass[b]
        members[a] += members[b]
        alive[b] = False
        clusters -= 1
        scores[a] = np.where(conflict[a] | ~alive, -np.inf, linkage[a])
        scores[:, a] = scores[a]
        scores[b, :] = scores[:, b] = -np.inf
    groups_of = [set(groups[m].tolist()) for m in members]
    found = [(members[k], groups_of[k]) for k in np.flatnonzero(alive)]

    short = np.flatnonzero(~strong)
    for item in short[np.argsort(-weights[short], kind="stable")]:
        allowed = [k for k, (_, seen) in enumerate(found) if groups[item] not in seen]
        scores_of = [np.average(similarity[item, found[k][0]], weights=weights[found[k][0]]) for k in allowed]
        apart = (
            short_threshold is not None
            and weights[item] >= MIN_CLIP_SECONDS
            and len(found) < upper
            and max(scores_of, default=-math.inf) < short_threshold
        )
        if not allowed or apart:
            found.append(([int(item)], {groups[item]}))
            continue
        chosen = allowed[int(np.argmax(scores_of))]
        found[chosen][0].append(int(item))
        found[chosen][1].add(groups[item])

    labels = np.empty(count, dtype=np.int64)
    for cluster, (items, _) in enumerate(sorted(found, key=lambda entry: min(entry[0]))):
        labels[items] = cluster
    return labels


def speaker_bounds(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None, registered_found: int
) -> tuple[int, int | None]:
    """Bounds on the number of anonymous speakers from hints that count everyone, registered speakers found included."""
    if num_speakers is not None:
        min_speakers = max_speakers = num_speakers
    lower = max(1, (min_speakers or 1) - registered_found)
    upper = None if max_speakers is None else max(1, max_speakers - registered_found)
    return (lower if upper is None else min(lower, upper)), upper


def link_segments(
    segments: Sequence[Mapping],
    registered: Sequence[str] = (),
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[dict]:
    """Turns of the whole recording, with anonymous speakers linked across segments.

    Each segment is `{"start", "end", "turns", "speakers"}`: its bounds in the recording (seconds),
    its turns as the model gave them (local labels, times from the segment's start) and the
    embedding of each anonymous local speaker (`local_speaker_embeddings`). Returns
    `{"speaker", "text", "start", "end"}` turns in recording time; anonymous speakers are named
    `spk0`, `spk1`, ... in order of first appearance, registered ones keep their names. Turns
    without usable times span their segment. The hints count all speakers, registered ones included.
    """
    known = set(registered)
    keys, vectors, groups, durations = [], [], [], []
    for number, segment in enumerate(segments):
        for label, entry in segment.get("speakers", {}).items():
            keys.append((number, label))
            vectors.append(np.asarray(entry["embedding"], dtype=np.float64))
            groups.append(number)
            durations.append(float(entry.get("duration", RELIABLE_SECONDS)))
    found = {t["speaker"] for segment in segments for t in segment["turns"] if t["speaker"] in known}
    lower, upper = speaker_bounds(num_speakers, min_speakers, max_speakers, len(found))
    labels = (
        cluster_embeddings(np.stack(vectors), groups, durations, threshold, lower, upper)
        if vectors
        else np.zeros(0, dtype=np.int64)
    )
    cluster_of = dict(zip(keys, labels.tolist(), strict=True))
    spare = len(set(cluster_of.values()))

    turns, first_seen = [], {}
    for number, segment in enumerate(segments):
        offset, length = float(segment["start"]), float(segment["end"]) - float(segment["start"])
        for turn in segment["turns"]:
            start, end = turn_span(turn, length)
            speaker = turn["speaker"]
            if speaker not in known:
                if (number, speaker) not in cluster_of:  # a speaker without an embedding stays on its own
                    cluster_of[(number, speaker)] = spare
                    spare += 1
                speaker = cluster_of[(number, speaker)]
                if speaker not in first_seen or offset + start < first_seen[speaker][0]:
                    first_seen[speaker] = (offset + start, len(first_seen))
            turns.append(
                {
                    "speaker": speaker,
                    "text": turn["text"],
                    "start": round(offset + start, 3),
                    "end": round(offset + end, 3),
                }
            )
    names = {cluster: f"spk{rank}" for rank, cluster in enumerate(sorted(first_seen, key=first_seen.get))}
    for turn in turns:
        if not isinstance(turn["speaker"], str):
            turn["speaker"] = names[turn["speaker"]]
    return turns


__all__ = [
    "DEFAULT_THRESHOLD",
    "RELABEL_THRESHOLD",
    "VoiceThresholds",
    "DEFAULT_VOICE_THRESHOLDS",
    "turn_embeddings",
    "registered_assignment",
    "join_touching",
    "relabel_turns",
    "split_turns",
    "turn_span",
    "anonymous_labels",
    "speaker_clips",
    "local_speaker_embeddings",
    "model_embedder",
    "model_window_embedder",
    "cluster_embeddings",
    "speaker_bounds",
    "link_segments",
]
