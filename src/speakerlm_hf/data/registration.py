"""The registration sampler of the spec, and the speaker bank it draws Over-Regist speakers from.

Training samples are stored as Match-Regist (every present speaker has an enrollment pool). For
each batch (the paper; `per_batch=False` draws for each sample instead) u ~ U(0, 1):
u < 1/3 keeps Match-Regist, 1/3 <= u < 2/3 drops all registrations (No-Regist, labels `spkK` in
order of first appearance), u >= 2/3 registers, besides the present speakers, k ~ U{1..50}
(drawn per sample) extra speakers from *other sessions*, given by their precomputed embeddings
(Over-Regist). The probabilities and the range of k are parameters.

Names: every registered speaker, present or extra, gets a distinct name drawn for the sample from
a pool of given names (English and Chinese, `DEFAULT_NAMES`; `NAME_POOLS` has one per language).
Corpus ids cannot serve: AliMeeting's `SPK8004` reads as an anonymous `spkK` label, and an id that
comes back with the same voice in many sessions would let the model learn the voice-name pairs
instead of reading the embedding.

Present speakers are registered with `clips_per_speaker` clips drawn from their pool (embedded by
the model's frozen extractor in the forward pass) or, with `enrollment="embeddings"`, with their
bank embedding. A sample in which some present speaker has no pool (or no bank entry) cannot be
registered honestly and falls back to No-Regist.

Extra speakers exclude the sample's session and every identity (`<corpus>/<speaker id>`) present
in it, so a person who attends several AliMeeting meetings is never registered as absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..feature_extraction_speakerlm import pad_features
from ..processing_speakerlm import check_speaker_names
from .audio import decode_audio

__all__ = [
    "MODES",
    "DEFAULT_NAMES",
    "ENGLISH_NAMES",
    "CHINESE_NAMES",
    "NAME_POOLS",
    "name_pool",
    "speaker_identity",
    "SpeakerBank",
    "compute_speaker_bank",
    "Registration",
    "RegistrationSampler",
    "present_speakers",
]

MODES = ("match", "no", "over")
BANK_FORMAT = "speakerlm-speaker-bank/1"

ENGLISH_NAMES = (
    "Mike", "Lucy", "Jack", "Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace",
    "Henry", "Iris", "James", "Julia", "Kevin", "Laura", "Leo", "Maria", "Nathan", "Nora",
    "Oliver", "Olivia", "Paul", "Rachel", "Robert", "Sarah", "Simon", "Sophie", "Thomas", "Victoria",
    "Walter", "Zoe", "Adam", "Alice", "Andrew", "Bella", "Brian", "Chloe", "Daniel", "Diana",
    "Edward", "Ella", "Ethan", "Fiona", "George", "Hannah", "Ian", "Isabel", "Jason", "Jessica",
    "Kate", "Liam", "Linda", "Lucas", "Martin", "Megan", "Noah", "Peter", "Rose", "Ryan",
    "Samuel", "Tina", "Victor", "William", "Amy", "Carl", "Eric", "Helen", "Mark", "Nancy",
    "Oscar", "Philip", "Ruth", "Steve", "Tony", "Vera", "Wendy", "Alex", "Charlotte", "Derek",
    "Eva", "Felix", "Gina", "Hugo", "Ivy", "Jonas", "Karen", "Lily", "Max", "Nina",
    "Owen", "Paula", "Quentin", "Rita", "Sean", "Tara", "Uma", "Vincent", "Yvonne", "Zack",
)  # fmt: skip
CHINESE_NAMES = (
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄丽", "周杰", "吴昊",
    "徐婷", "孙浩", "马超", "朱琳", "胡斌", "郭强", "何欢", "林峰", "高媛", "罗琪",
    "郑凯", "梁雪", "谢晨", "宋佳", "唐亮", "韩梅", "冯刚", "邓洁", "曹阳", "彭飞",
    "曾红", "萧然", "田甜", "董明", "潘悦", "袁博", "蒋欣", "蔡军", "余萍", "杜宇",
    "叶青", "程龙", "魏华", "苏晴", "吕方", "丁宁", "沈涛", "任静", "姚远", "卢琳",
)  # fmt: skip
DEFAULT_NAMES = ENGLISH_NAMES + CHINESE_NAMES
# Pools by language: a model trained on one language's speech learns to copy that language's names
# (an English-only model with a small tokenizer spends capacity on Chinese byte pieces otherwise).
NAME_POOLS = {"all": DEFAULT_NAMES, "english": ENGLISH_NAMES, "chinese": CHINESE_NAMES}


def name_pool(spec: str) -> list[str]:
    """Registered-name pool from a pool name (`NAME_POOLS`) or a UTF-8 text file of one name per line."""
    if spec in NAME_POOLS:
        return list(NAME_POOLS[spec])
    if not os.path.isfile(spec):
        raise ValueError(f"name pool {spec!r} is neither one of {sorted(NAME_POOLS)} nor a file of names")
    with open(spec, encoding="utf-8") as file:
        names = [line.strip() for line in file if line.strip()]
    if not names:
        raise ValueError(f"name pool file {spec!r} holds no names")
    try:
        return check_speaker_names(names)
    except ValueError as error:
        raise ValueError(f"name pool file {spec!r}: {error}") from None


def speaker_identity(corpus: str, speaker: str) -> str:
    """A person's key across sessions: stored speaker ids are corpus-wide (see `corpora`)."""
    return f"{corpus}/{speaker}"


def present_speakers(turns: Iterable[Mapping]) -> list[str]:
    """Speakers of the turns in order of first appearance (turns sorted by start time)."""
    ordered = sorted(turns, key=lambda t: (t["start"], t["end"]))
    return list(dict.fromkeys(t["speaker"] for t in ordered))


@dataclass
class SpeakerBank:
    """Raw extractor embeddings, one per (session, speaker identity)."""

    sessions: list[str]
    identities: list[str]
    embeddings: np.ndarray
    _index: dict[tuple[str, str], int] = field(init=False, repr=False)

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if (
            self.embeddings.ndim != 2
            or not len(self.sessions) == len(self.identities) == self.embeddings.shape[0]
        ):
            raise ValueError(
                f"a speaker bank needs one session and identity per embedding row; got {len(self.sessions)} "
                f"sessions, {len(self.identities)} identities and embeddings of shape {self.embeddings.shape}"
            )
        self._index = {key: i for i, key in enumerate(zip(self.sessions, self.identities, strict=True))}
        session_codes = {s: i for i, s in enumerate(dict.fromkeys(self.sessions))}
        self._identity_codes = {s: i for i, s in enumerate(dict.fromkeys(self.identities))}
        self._sessions = np.array([session_codes[s] for s in self.sessions], dtype=np.int64)
        self._session_codes = session_codes
        self._identities = np.array([self._identity_codes[s] for s in self.identities], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def embedding_size(self) -> int:
        return self.embeddings.shape[1]

    def embedding(self, session: str, identity: str) -> np.ndarray | None:
        index = self._index.get((session, identity))
        return None if index is None else self.embeddings[index]

    def draw_others(
        self, count: int, rng: np.random.Generator, session: str, exclude: Iterable[str] = ()
    ) -> list[int]:
        """Rows of up to `count` distinct identities from sessions other than `session`, not in `exclude`."""
        excluded = [self._identity_codes[i] for i in exclude if i in self._identity_codes]
        allowed = (self._sessions != self._session_codes.get(session, -1)) & ~np.isin(
            self._identities, excluded
        )
        candidates = rng.permutation(np.flatnonzero(allowed))
        _, first = np.unique(self._identities[candidates], return_index=True)
        return candidates[np.sort(first)][:count].tolist()

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        metadata = {
            "format": BANK_FORMAT,
            "sessions": json.dumps(self.sessions, ensure_ascii=False),
            "identities": json.dumps(self.identities, ensure_ascii=False),
        }
        save_file({"embeddings": self.embeddings}, os.fspath(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpeakerBank:
        from safetensors import safe_open

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"speaker bank {path!r} does not exist")
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != BANK_FORMAT:
                raise ValueError(f"{path!r} is not a speaker bank written by SpeakerBank.save")
            embeddings = handle.get_tensor("embeddings")
        return cls(json.loads(metadata["sessions"]), json.loads(metadata["identities"]), embeddings)


def compute_speaker_bank(
    model,
    feature_extractor,
    rows: Iterable[Mapping],
    max_clips: int = 8,
    batch_size: int = 64,
) -> SpeakerBank:
    """Embed the enrollment pools of prepared (or simulated) rows with the model's speaker extractor.

    Each (session, speaker) gets the mean of `model.embed_enrollment_pieces` over the pieces of up
    to `max_clips` of its distinct clips (gathered across the segments it appears in), the same
    average the model takes of enrollment pieces.
    """
    device = next(model.speaker_encoder.parameters()).device
    training = model.speaker_encoder.training
    model.speaker_encoder.eval()  # BatchNorm on running statistics, as when the extractor is frozen
    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = {}
    seen: dict[tuple[str, str], set] = {}
    pending: list[tuple[tuple[str, str], torch.Tensor]] = []

    def flush():
        if not pending:
            return
        features, mask = pad_features([piece for _, piece in pending])
        with torch.no_grad():
            embedded = (
                model.embed_enrollment_pieces(features.to(device), mask.to(device)).float().cpu().numpy()
            )
        for (key, _), vector in zip(pending, embedded, strict=True):
            sums[key] = sums.get(key, 0.0) + vector
            counts[key] = counts.get(key, 0) + 1
        pending.clear()

    try:
        for row in rows:
            for entry in row.get("enrollment") or []:
                key = (row["session"], speaker_identity(row["corpus"], entry["speaker"]))
                taken = seen.setdefault(key, set())
                for number, clip in enumerate(entry["clips"]):
                    # Prepared clips recur in the pools of neighbouring segments: count each span once.
                    timed = isinstance(clip, Mapping) and clip.get("start") is not None
                    clip_key = (clip["start"], clip["end"]) if timed else (row.get("id"), number)
                    if len(taken) >= max_clips or clip_key in taken:
                        continue
                    taken.add(clip_key)
                    what = f"enrollment clip of {key[1]!r} in session {key[0]!r}"
                    try:
                        pieces = feature_extractor.enrollment_features([decode_audio(clip, what)], key[1])
                    except ValueError:
                        continue  # too short or silent: the processor would refuse it too
                    pending.extend((key, piece) for piece in pieces)
                if len(pending) >= batch_size:
                    flush()
        flush()
    finally:
        model.speaker_encoder.train(training)
    if not sums:
        raise ValueError("the rows hold no usable enrollment clips; nothing to put in the speaker bank")
    keys = list(sums)
    embeddings = np.stack([sums[key] / counts[key] for key in keys])
    return SpeakerBank([k[0] for k in keys], [k[1] for k in keys], embeddings)


@dataclass
class Registration:
    """One sample's registration: the drawn mode, the label of each stored speaker, and the prompt's
    registered speakers in order, `{name: [clips]}` or `{name: {"embedding": vector}}`."""

    mode: str
    labels: dict[str, str]
    speakers: dict[str, object]


class RegistrationSampler:
    """Draws No/Match/Over-Regist and builds each sample's registered speakers (see the module doc).

    Args:
        bank: precomputed embeddings for Over-Regist extras (and for present speakers with
            `enrollment="embeddings"`); required when Over-Regist can be drawn.
        probabilities: (match, no, over), default a third each.
        per_batch: one draw per batch (the paper) or one per sample.
        min_extra / max_extra: range of the number of extra speakers (uniform, inclusive).
        names: pool of registered names; needs more names than present + max_extra speakers.
        enrollment: "clips" (pool clips, embedded in the forward pass) or "embeddings" (bank).
        clips_per_speaker: pool clips drawn per present speaker with `enrollment="clips"`.
    """

    def __init__(
        self,
        bank: SpeakerBank | None = None,
        probabilities: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
        per_batch: bool = True,
        min_extra: int = 1,
        max_extra: int = 50,
        names: Sequence[str] = DEFAULT_NAMES,
        enrollment: str = "clips",
        clips_per_speaker: int = 1,
    ):
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (3,) or (probabilities < 0).any() or probabilities.sum() <= 0:
            raise ValueError(
                f"probabilities must be three non-negative numbers (match, no, over), got {probabilities}"
            )
        self.probabilities = probabilities / probabilities.sum()
        if enrollment not in ("clips", "embeddings"):
            raise ValueError(f"enrollment {enrollment!r} is not 'clips' or 'embeddings'")
        if bank is None and (self.probabilities[2] > 0 or enrollment == "embeddings"):
            raise ValueError(
                "Over-Regist and enrollment='embeddings' need a SpeakerBank (compute_speaker_bank); "
                "pass bank= or set the Over-Regist probability to 0"
            )
        if not 0 <= min_extra <= max_extra:
            raise ValueError(f"need 0 <= min_extra <= max_extra, got {min_extra} and {max_extra}")
        if clips_per_speaker < 1:
            raise ValueError(f"clips_per_speaker must be at least 1, got {clips_per_speaker}")
        self.names = check_speaker_names(list(names))
        self.bank = bank
        self.per_batch = per_batch
        self.min_extra = min_extra
        self.max_extra = max_extra
        self.enrollment = enrollment
        self.clips_per_speaker = clips_per_speaker

    def draw_mode(self, rng: np.random.Generator) -> str:
        """u ~ U(0, 1) against the cumulative probabilities (1/3, 2/3 by default)."""
        u = rng.random()
        bounds = np.cumsum(self.probabilities)
        return MODES[min(int(np.searchsorted(bounds, u, side="right")), 2)]

    def batch_modes(self, batch_size: int, rng: np.random.Generator) -> list[str]:
        if self.per_batch:
            return [self.draw_mode(rng)] * batch_size
        return [self.draw_mode(rng) for _ in range(batch_size)]

    def register(self, example: Mapping, mode: str, rng: np.random.Generator) -> Registration:
        """The registration of one stored (Match-Regist) sample under `mode`."""
        if mode not in MODES:
            raise ValueError(f"registration mode {mode!r} is not one of {MODES}")
        present = present_speakers(example["turns"])
        enrollment = self._present_enrollment(example, present, rng) if mode != "no" else None
        if enrollment is None:
            return Registration("no", {s: f"spk{i}" for i, s in enumerate(present)}, {})
        extras = []
        if mode == "over":
            count = int(rng.integers(self.min_extra, self.max_extra + 1))
            exclude = [speaker_identity(example["corpus"], s) for s in present]
            extras = self.bank.draw_others(count, rng, example["session"], exclude)
        total = len(present) + len(extras)
        if total > len(self.names):
            raise ValueError(f"{total} registered speakers need more names than the pool's {len(self.names)}")
        names = [self.names[i] for i in rng.choice(len(self.names), size=total, replace=False)]
        labels = dict(zip(present, names[: len(present)], strict=True))
        entries = [(labels[s], enrollment[s]) for s in present]
        entries += [
            (name, {"embedding": self.bank.embeddings[row]})
            for name, row in zip(names[len(present) :], extras, strict=True)
        ]
        order = rng.permutation(len(entries))  # the order of registered speakers carries no meaning
        mode = "over" if extras else "match"
        return Registration(mode, labels, {entries[i][0]: entries[i][1] for i in order})

    def _present_enrollment(
        self, example: Mapping, present: Sequence[str], rng: np.random.Generator
    ) -> dict[str, object] | None:
        """Each present speaker's enrollment, or None when one of them has none."""
        if self.enrollment == "embeddings":
            found = {}
            for speaker in present:
                vector = self.bank.embedding(example["session"], speaker_identity(example["corpus"], speaker))
                if vector is None:
                    return None
                found[speaker] = {"embedding": vector}
            return found
        pools = {entry["speaker"]: list(entry["clips"]) for entry in example.get("enrollment") or []}
        found = {}
        for speaker in present:
            pool = pools.get(speaker)
            if not pool:
                return None
            count = min(self.clips_per_speaker, len(pool))
            found[speaker] = [pool[i] for i in sorted(rng.choice(len(pool), size=count, replace=False))]
        return found
