"""Equal-error rate of a speaker-embedding extractor on the synthetic corpus's unseen test speakers.

Two trial lists, both scored by the cosine of L2-normalised embeddings:

- utterance: every pair of whole test utterances (same speaker = target trial);
- enrollment vs turn, the way SpeakerLM uses the extractor: each speaker's utterances are split
  in two halves; enrollment clips (3-10 s) are concatenations of the first half, turns (2-4 s) are
  built from the second half, and every enrollment is scored against every turn. Also reports
  closed-set identification accuracy: a turn goes to the speaker whose mean enrollment embedding
  is nearest, among all test speakers and among 4 (the true one and 3 random others).
- look-alikes, from the same enrollments and turns: target trials against the turns of each
  speaker's look-alikes alone (`look_alikes`: the same espeak variant, so the same timbre, with
  another base voice, so another accent, at a pitch within 10), and identification among a speaker
  and its look-alikes. These are the registered strangers Over-Regist confuses with the speaker.

With `--meetings`, the voices of rendered meetings as relabelling hears them: each reference turn
of a meeting embedded from its own audio (`linking_speakerlm.turn_embeddings`: overlap and silence
left out), every pair of turns of one meeting scored (a pair of different people in one room is
what relabelling must keep apart), and the turns of each meeting clustered as `relabel_turns`
clusters anonymous turns, at the model's relabel and short thresholds: how often the speaker count
comes out right, too low (people merged) or too high, with perfect turns.

    python -m training.tiny.eval_speaker_extractor --model /work/data/speaker_extractor \
        --corpus /work/data/synthetic-en [--split test] [--json results.json]
    python -m training.tiny.eval_speaker_extractor --model work/tiny/stage4ag-avg \
        --meetings work/tiny/meetings-dev2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors import safe_open
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F
from transformers import PreTrainedModel

from speakerlm_hf.audio_frontend import speaker_features
from speakerlm_hf.configuration_speaker_encoders import CAMPPlusConfig, ERes2NetV2Config
from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.data.audio import SAMPLING_RATE, decode_audio
from speakerlm_hf.hub import safetensors_files
from speakerlm_hf.linking_speakerlm import (
    DEFAULT_VOICE_THRESHOLDS,
    RELIABLE_SECONDS,
    Embedder,
    VoiceThresholds,
    cluster_embeddings,
    model_embedder,
    turn_embeddings,
    unit_rows,
)
from speakerlm_hf.modeling_campplus import CAMPPlusModel
from speakerlm_hf.modeling_eres2netv2 import ERes2NetV2Model
from training.synthetic.corpus import load_utterances
from training.tiny.evaluate import load_sessions, speech_masks

EXTRACTOR_CLASSES: dict[str, type[PreTrainedModel]] = {
    ERes2NetV2Config.model_type: ERes2NetV2Model,
    CAMPPlusConfig.model_type: CAMPPlusModel,
}


@dataclass
class SpeakerUtterances:
    """Decoded single-speaker utterances: int16 waveforms at 16 kHz and integer speaker labels."""

    waveforms: list[np.ndarray]
    labels: np.ndarray
    speakers: list[str]

    @classmethod
    def from_named(cls, waveforms: list[np.ndarray], names: Sequence[str]) -> SpeakerUtterances:
        """Int16 `waveforms` labelled by their speakers' `names`; speakers are numbered in name order."""
        speakers = sorted(set(names))
        index = {name: i for i, name in enumerate(speakers)}
        return cls(waveforms, np.array([index[n] for n in names], dtype=np.int64), speakers)

    def __len__(self) -> int:
        return len(self.waveforms)

    def waveform(self, index: int) -> np.ndarray:
        """Float32 [-1, 1] waveform of utterance `index`."""
        return self.waveforms[index].astype(np.float32) / 32768.0

    def indices_by_speaker(self) -> list[np.ndarray]:
        """Utterance indices of each speaker label, in label order."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(len(self.speakers) + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(len(self.speakers))]

    def subset(self, indices: Sequence[int]) -> SpeakerUtterances:
        """The utterances at `indices`, speaker labels renumbered from 0 in first-seen order."""
        kept = [int(i) for i in indices]
        old = self.labels[kept]
        mapping: dict[int, int] = {}
        for label in old:
            mapping.setdefault(int(label), len(mapping))
        speakers = [""] * len(mapping)
        for label, new in mapping.items():
            speakers[new] = self.speakers[label]
        return SpeakerUtterances(
            [self.waveforms[i] for i in kept],
            np.array([mapping[int(x)] for x in old], dtype=np.int64),
            speakers,
        )


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float [-1, 1] samples as int16, the storage of `SpeakerUtterances`."""
    return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def load_speaker_utterances(
    corpus_dir: str | Path, split: str, max_utterances: int | None = None
) -> SpeakerUtterances:
    """Decode a synthetic-corpus split into memory (int16: 12 h of audio take 1.4 GB)."""
    dataset = load_utterances(corpus_dir, split, streaming=False, decode=False)
    if max_utterances is not None:
        dataset = dataset.select(range(min(max_utterances, len(dataset))))
    waveforms: list[np.ndarray] = []
    names: list[str] = []
    for batch in dataset.select_columns(["id", "audio", "speaker"]).iter(batch_size=500):
        for utt_id, audio, speaker in zip(batch["id"], batch["audio"], batch["speaker"], strict=True):
            samples = decode_audio(audio, utt_id)
            waveforms.append(pcm16(samples))
            names.append(speaker)
    if not waveforms:
        raise ValueError(f"split {split!r} of {str(corpus_dir)!r} holds no utterances")
    return SpeakerUtterances.from_named(waveforms, names)


LOOK_ALIKE_PITCH = 10


def load_speaker_metadata(*folders: str | Path) -> dict[str, dict]:
    """Each speaker's voice recipe by speaker id, from a synthetic corpus's `speakers.json` and
    rendered meetings' `*-random-speakers.json` in `folders` (other paths are skipped)."""
    metadata: dict[str, dict] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for listing in [folder / "speakers.json", *sorted(folder.glob("*-random-speakers.json"))]:
            if listing.is_file():
                metadata.update({entry["id"]: entry for entry in json.loads(listing.read_text())})
    return metadata


def look_alikes(
    speakers: Sequence[str], metadata: Mapping[str, Mapping], pitch_within: float = LOOK_ALIKE_PITCH
) -> list[np.ndarray]:
    """For each of `speakers` (by index), the indices of its look-alikes among them: the same espeak
    variant (the timbre) with another base voice (the accent) and a pitch at most `pitch_within`
    away. Speakers missing from `metadata` have none."""
    by_variant: dict[str, list[int]] = {}
    for index, name in enumerate(speakers):
        if name in metadata:
            by_variant.setdefault(metadata[name]["variant"], []).append(index)
    found = []
    for name in speakers:
        entry = metadata.get(name)
        kin = by_variant.get(entry["variant"], []) if entry else []
        found.append(
            np.array(
                [
                    other
                    for other in kin
                    if metadata[speakers[other]]["voice"] != entry["voice"]
                    and abs(metadata[speakers[other]]["pitch"] - entry["pitch"]) <= pitch_within
                ],
                dtype=np.int64,
            )
        )
    return found


def compute_eer(scores: np.ndarray, targets: np.ndarray) -> float:
    """Equal-error rate of `scores` for trials marked 1 (target) / 0 (non-target) in `targets`.

    The miss and false-alarm rates are swept over every threshold; where they cross, the EER is
    interpolated linearly between the two neighbouring operating points.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    if scores.shape != targets.shape or scores.ndim != 1:
        raise ValueError(
            f"scores and targets must be 1-D of equal length, got {scores.shape} and {targets.shape}"
        )
    if targets.all() or not targets.any():
        raise ValueError("EER needs both target and non-target trials")
    miss, false_alarm = _error_rates(scores, targets)
    gap = miss - false_alarm  # rises from -1 to +1 as the threshold rises
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0 or i == 0:
        return float((miss[i] + false_alarm[i]) / 2)
    # crossing between operating points i-1 (gap < 0) and i (gap > 0)
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(false_alarm[i - 1] + t * (false_alarm[i] - false_alarm[i - 1]))


def compute_min_dcf(
    scores: np.ndarray, targets: np.ndarray, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """Minimum normalised detection cost: min over thresholds of (c_miss P_miss p + c_fa P_fa (1-p)) / default."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    if targets.all() or not targets.any():
        raise ValueError("minDCF needs both target and non-target trials")
    miss, false_alarm = _error_rates(scores, targets)
    cost = c_miss * miss * p_target + c_fa * false_alarm * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def _error_rates(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Miss and false-alarm rates with the threshold below all scores, then just above each distinct score."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_targets = targets[order]
    # a threshold just above sorted_scores[k] rejects every trial up to k; ties move together
    last_of_value = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    rejected_targets = np.cumsum(sorted_targets)[last_of_value]
    rejected_nontargets = np.cumsum(~sorted_targets)[last_of_value]
    num_targets = targets.sum()
    num_nontargets = targets.size - num_targets
    miss = np.r_[0.0, rejected_targets / num_targets]
    false_alarm = np.r_[1.0, (num_nontargets - rejected_nontargets) / num_nontargets]
    return miss, false_alarm


@torch.no_grad()
def embed_waveforms(model: PreTrainedModel, waveforms: Sequence[np.ndarray]) -> torch.Tensor:
    """L2-normalised embeddings (N, E) of float32 16 kHz waveforms, one at a time in eval mode."""
    was_training = model.training
    model.eval()
    try:
        embeddings = [model(speaker_features(w).unsqueeze(0))[0] for w in waveforms]
    finally:
        model.train(was_training)
    return F.normalize(torch.stack(embeddings).float(), dim=-1)


def all_pair_trials(embeddings: torch.Tensor, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and target flags of every unordered pair of distinct rows."""
    scores = (embeddings @ embeddings.T).numpy()
    rows, cols = np.triu_indices(len(labels), k=1)
    return scores[rows, cols], (labels[rows] == labels[cols]).astype(np.int64)


def trial_metrics(scores: np.ndarray, targets: np.ndarray) -> dict:
    """EER and minDCF(0.01) of a trial list, with its size."""
    return {
        "eer": compute_eer(scores, targets),
        "min_dcf_0.01": compute_min_dcf(scores, targets, p_target=0.01),
        "target_trials": int(targets.sum()),
        "nontarget_trials": int(targets.size - targets.sum()),
    }


def _concatenated(
    data: SpeakerUtterances, pool: np.ndarray, first: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """`length` samples starting in utterance `first`, continued by the rest of `pool` in random order.

    The pool is only cycled again when it is too short, so a clip repeats no sentence if it can help it.
    """
    others = [int(i) for i in rng.permutation(pool) if int(i) != first]
    pieces = [data.waveform(first)]
    total = pieces[0].size
    k = 0
    while total < length:
        pieces.append(data.waveform(others[k % len(others)] if others else first))
        total += pieces[-1].size
        k += 1
    clip = np.concatenate(pieces)
    start = int(rng.integers(0, clip.size - length + 1))
    return clip[start : start + length]


def enrollment_turn_clips(
    data: SpeakerUtterances,
    rng: np.random.Generator,
    enrollments_per_speaker: int = 2,
    enrollment_seconds: tuple[float, float] = (3.0, 10.0),
    turn_seconds: tuple[float, float] = (2.0, 4.0),
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """Enrollment clips and turns that never share an utterance: (enroll, enroll labels, turns, turn labels).

    Each speaker's utterances are shuffled and halved; enrollments concatenate the first half,
    each utterance of the second half starts one turn (continued by the same half if too short).
    """
    enrollments, enrollment_labels, turns, turn_labels = [], [], [], []
    for label, indices in enumerate(data.indices_by_speaker()):
        if indices.size < 2:
            continue
        shuffled = rng.permutation(indices)
        half = shuffled.size // 2
        enrollment_pool, turn_pool = shuffled[:half], shuffled[half:]
        for _ in range(enrollments_per_speaker):
            length = int(rng.uniform(*enrollment_seconds) * SAMPLING_RATE)
            enrollments.append(
                _concatenated(data, enrollment_pool, int(rng.choice(enrollment_pool)), length, rng)
            )
            enrollment_labels.append(label)
        for first in turn_pool:
            length = int(rng.uniform(*turn_seconds) * SAMPLING_RATE)
            turns.append(_concatenated(data, turn_pool, int(first), length, rng))
            turn_labels.append(label)
    return enrollments, np.array(enrollment_labels), turns, np.array(turn_labels)


def evaluate_extractor(
    model: PreTrainedModel,
    data: SpeakerUtterances,
    seed: int = 0,
    small_set: int = 4,
    kin: Sequence[np.ndarray] | None = None,
    turn_seconds: tuple[float, float] = (2.0, 4.0),
) -> dict:
    """Utterance-pair and enrollment-vs-turn EER/minDCF, and closed-set identification accuracy.

    Identification picks the nearest mean enrollment embedding among all speakers, and among
    `small_set` speakers (the true one and random others), the size of a meeting's registration.
    With `kin` (each speaker label's look-alike labels, `look_alikes`), also the "look_alike"
    trials: enrollments against their own speaker's turns and their look-alikes' turns alone,
    and identification of each turn among its speaker and that speaker's look-alikes.
    `turn_seconds` is the range of the turns' lengths (short ones, under a second, are the turns
    that relabelling gets wrong most).
    """
    utterance_embeddings = embed_waveforms(model, [data.waveform(i) for i in range(len(data))])
    results = {
        "speakers": len(data.speakers),
        "utterances": len(data),
        "utterance": trial_metrics(*all_pair_trials(utterance_embeddings, data.labels)),
    }
    rng = np.random.default_rng(seed)
    enrollments, enrollment_labels, turns, turn_labels = enrollment_turn_clips(
        data, rng, turn_seconds=turn_seconds
    )
    enrolled = embed_waveforms(model, enrollments)
    turn_embeddings = embed_waveforms(model, turns)
    scores = (enrolled @ turn_embeddings.T).numpy()
    targets = (enrollment_labels[:, None] == turn_labels[None, :]).astype(np.int64)
    results["enrollment_vs_turn"] = trial_metrics(scores.ravel(), targets.ravel())
    speakers = np.unique(enrollment_labels)
    centroids = F.normalize(torch.stack([enrolled[enrollment_labels == s].mean(0) for s in speakers]), dim=-1)
    turn_scores = (turn_embeddings @ centroids.T).numpy()
    column = np.searchsorted(speakers, turn_labels)
    results["enrollment_vs_turn"]["identification_accuracy"] = float(
        (turn_scores.argmax(axis=1) == column).mean()
    )
    results["enrollment_vs_turn"]["candidates"] = int(speakers.size)
    results["enrollment_vs_turn"][f"identification_accuracy_{small_set}"] = _small_set_accuracy(
        turn_scores, column, small_set, rng
    )
    if kin is not None:
        results["look_alike"] = look_alike_metrics(
            scores, targets, enrollment_labels, turn_labels, turn_scores, speakers, kin
        )
    return results


def look_alike_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    enrollment_labels: np.ndarray,
    turn_labels: np.ndarray,
    turn_scores: np.ndarray,
    speakers: np.ndarray,
    kin: Sequence[np.ndarray],
) -> dict:
    """`evaluate_extractor`'s look-alike figures from its enrollment-vs-turn scores (enrollments,
    turns), their targets, the turns' scores against the speakers' mean enrollments (turns,
    speakers) and each label's look-alikes `kin`."""
    related = np.zeros((len(kin), len(kin)), dtype=bool)
    for label, others in enumerate(kin):
        related[label, others] = True
    nontarget = related[enrollment_labels[:, None], turn_labels[None, :]]
    kept = (targets == 1) | nontarget
    out = {"speakers_with_look_alikes": int(sum(others.size > 0 for others in kin))}
    if nontarget.any():
        out.update(trial_metrics(scores[kept], targets[kept]))
    column = np.searchsorted(speakers, turn_labels)
    right = []
    for row, label in enumerate(turn_labels):
        others = np.searchsorted(speakers, kin[label][np.isin(kin[label], speakers)])
        if others.size:
            right.append(turn_scores[row, column[row]] > turn_scores[row, others].max())
    if right:
        out["identification_accuracy"] = float(np.mean(right))
        out["turns"] = len(right)
    return out


def _small_set_accuracy(scores: np.ndarray, column: np.ndarray, size: int, rng: np.random.Generator) -> float:
    """Accuracy of picking each turn's speaker among itself and `size - 1` random other enrolled speakers."""
    size = min(size, scores.shape[1])
    correct = 0
    for row, true in enumerate(column):
        others = rng.choice(np.delete(np.arange(scores.shape[1]), true), size - 1, replace=False)
        correct += bool(others.size == 0 or scores[row, true] > scores[row, others].max())
    return correct / len(column)


@dataclass
class MeetingTurnVoices:
    """The reference turns of one meeting as relabelling hears them: each turn's speaker, its
    embedding (turns, size) and the seconds of audio behind it."""

    session: str
    speakers: list[str]
    vectors: np.ndarray
    seconds: np.ndarray


def meeting_turn_voices(
    sessions: Sequence[Mapping], embed: Embedder, speech_masks: Sequence[np.ndarray | None] | None = None
) -> list[MeetingTurnVoices]:
    """Each session's reference turns (`"turns"`, in time order) embedded from its `"audio"` as
    `turn_embeddings` embeds a transcript's turns, with the session's speech mask when given."""
    found = []
    masks = speech_masks if speech_masks is not None else [None] * len(sessions)
    for session, mask in zip(sessions, masks, strict=True):
        turns = sorted(session["turns"], key=lambda turn: (turn["start"], turn["end"]))
        vectors, seconds = turn_embeddings(session["audio"], turns, embed, mask)
        found.append(
            MeetingTurnVoices(str(session["id"]), [str(t["speaker"]) for t in turns], vectors, seconds)
        )
    return found


def meeting_turn_metrics(
    meetings: Sequence[MeetingTurnVoices], thresholds: VoiceThresholds = DEFAULT_VOICE_THRESHOLDS
) -> dict:
    """Trials between the turns of one meeting and each meeting's speaker count under clustering.

    "pairs": EER and minDCF of every pair of turns of one meeting that both have at least
    `RELIABLE_SECONDS` of audio (a target trial: one person), and the share of different-person
    pairs at or above `thresholds.relabel`, which relabelling would join. "speaker_count": the
    meetings whose turns, clustered as `relabel_turns` clusters anonymous turns (average linkage
    down to `thresholds.relabel`, short turns by `thresholds.short`), make as many speakers as the
    reference ("right"), fewer ("merged") or more ("split"), with the merged meetings' ids, and
    "confused_seconds": the share of the turns' seconds whose cluster is not their speaker's under
    the best one-to-one pairing of speakers and clusters (the speaker confusion of DER with perfect
    turns; a back-channel merged into someone else costs its seconds alone)."""
    scores, targets = [], []
    right = split = 0
    merged = []
    confused = total = 0.0
    for meeting in meetings:
        speakers = np.asarray(meeting.speakers)
        reliable = np.flatnonzero(np.asarray(meeting.seconds) >= RELIABLE_SECONDS)
        vectors = unit_rows(meeting.vectors[reliable])
        rows, cols = np.triu_indices(reliable.size, k=1)
        scores.append((vectors @ vectors.T)[rows, cols])
        targets.append(speakers[reliable][rows] == speakers[reliable][cols])
        labels = cluster_embeddings(
            meeting.vectors,
            list(range(len(speakers))),
            meeting.seconds,
            thresholds.relabel,
            short_threshold=thresholds.short,
        )
        people, found_labels = np.unique(speakers, return_inverse=True)
        overlap = np.zeros((people.size, int(labels.max()) + 1))
        np.add.at(overlap, (found_labels, labels), np.asarray(meeting.seconds, dtype=np.float64))
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        total += overlap.sum()
        confused += overlap.sum() - overlap[rows, cols].sum()
        found, expected = overlap.shape[1], people.size  # cluster ids run 0, 1, ...
        right += found == expected
        split += found > expected
        if found < expected:
            merged.append(meeting.session)
    all_scores, all_targets = np.concatenate(scores), np.concatenate(targets).astype(np.int64)
    pairs = trial_metrics(all_scores, all_targets)
    pairs["nontarget_at_relabel"] = float((all_scores[all_targets == 0] >= thresholds.relabel).mean())
    return {
        "meetings": len(meetings),
        "turns": int(sum(len(m.speakers) for m in meetings)),
        "relabel": thresholds.relabel,
        "short": thresholds.short,
        "pairs": pairs,
        "speaker_count": {
            "right": right / len(meetings),
            "merged": len(merged) / len(meetings),
            "split": split / len(meetings),
            "merged_meetings": merged,
        },
        "confused_seconds": confused / max(total, 1e-9),
    }


def load_extractor(path: str | Path) -> PreTrainedModel:
    """An eval-mode ERes2NetV2 or CAM++ extractor, picked by its config.

    `path` is a folder written by the extractor's `save_pretrained`, or a SpeakerLM checkpoint
    folder, whose frozen speaker encoder (`speaker_config`, `speaker_encoder.*` weights) is taken.
    """
    model_type = _model_type(path)
    if model_type == "speakerlm":
        return _speakerlm_speaker_encoder(Path(path))
    if model_type not in EXTRACTOR_CLASSES:
        raise ValueError(
            f"{str(Path(path) / 'config.json')!r} has model_type {model_type!r}; expected one of "
            f"{list(EXTRACTOR_CLASSES)} or 'speakerlm'"
        )
    return EXTRACTOR_CLASSES[model_type].from_pretrained(path).eval()


def _model_type(path: str | Path) -> str | None:
    """The `model_type` of the config.json in the folder `path`."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{str(config_file)!r} does not exist; pass a folder written by save_pretrained"
        )
    return json.loads(config_file.read_text()).get("model_type")


def _speakerlm_speaker_encoder(path: Path) -> PreTrainedModel:
    """The speaker encoder of the SpeakerLM checkpoint at `path`.

    The weight files (one, or shards) are checked against the config as `load_exported` checks
    them, and only the speaker encoder's tensors are read, not the LLM's.
    """
    speaker_config = SpeakerLMConfig.from_pretrained(path).speaker_config
    extractor = EXTRACTOR_CLASSES[speaker_config.model_type](speaker_config)
    prefix = "speaker_encoder."
    state = {}
    for weights_file in safetensors_files(path):
        with safe_open(str(weights_file), "pt") as weights:
            for name in weights.keys():
                if name.startswith(prefix):
                    state[name[len(prefix) :]] = weights.get_tensor(name)
    extractor.load_state_dict(state, strict=True)
    return extractor.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.tiny.eval_speaker_extractor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, help="folder of a save_pretrained extractor, or a SpeakerLM checkpoint"
    )
    parser.add_argument("--corpus", default=None, help="synthetic corpus folder")
    parser.add_argument(
        "--meetings",
        default=None,
        help="rendered meetings (training.tiny.meetings) whose reference turns are scored",
    )
    parser.add_argument("--meetings-split", default="test", help="the meetings' split")
    parser.add_argument("--max-meetings", type=int, default=None, help="score the first N meetings")
    parser.add_argument(
        "--relabel",
        type=float,
        default=None,
        help="relabel threshold of the meeting clustering (default: the model's own, else 0.75)",
    )
    parser.add_argument(
        "--short", type=float, default=None, help="short-turn threshold (default: the model's own)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-utterances", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the enrollment/turn clips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--turn-seconds",
        type=float,
        nargs=2,
        default=(2.0, 4.0),
        metavar=("MIN", "MAX"),
        help="range of the turns' lengths in the enrollment-vs-turn trials",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def _meeting_results(args: argparse.Namespace, model: PreTrainedModel) -> dict:
    """`meeting_turn_metrics` of `--meetings` at the thresholds of the arguments, else of the model
    (a SpeakerLM checkpoint's own), else the defaults."""
    thresholds = DEFAULT_VOICE_THRESHOLDS
    if _model_type(args.model) == "speakerlm":
        thresholds = VoiceThresholds.from_config(SpeakerLMConfig.from_pretrained(args.model))
    overrides = {"relabel": args.relabel, "short": args.short}
    thresholds = replace(thresholds, **{k: v for k, v in overrides.items() if v is not None})
    sessions = load_sessions(args.meetings, args.meetings_split, args.max_meetings)
    embed = model_embedder(SimpleNamespace(speaker_encoder=model))
    voices = meeting_turn_voices(sessions, embed, speech_masks(sessions))
    return {"folder": str(args.meetings), **meeting_turn_metrics(voices, thresholds)}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.corpus is None and args.meetings is None:
        raise SystemExit("give --corpus, --meetings or both")
    if not 0 < args.turn_seconds[0] <= args.turn_seconds[1]:
        raise SystemExit(f"--turn-seconds must be 0 < MIN <= MAX, got {args.turn_seconds}")
    torch.set_num_threads(args.threads)
    model = load_extractor(args.model)
    results = {}
    if args.corpus is not None:
        data = load_speaker_utterances(args.corpus, args.split, args.max_utterances)
        kin = look_alikes(data.speakers, load_speaker_metadata(args.corpus))
        results = evaluate_extractor(
            model, data, seed=args.seed, kin=kin, turn_seconds=tuple(args.turn_seconds)
        )
    if args.meetings is not None:
        results["meetings"] = _meeting_results(args, model)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
