"""The registration sampler (modes, extras, names, fallbacks) and the data collator's outputs."""

import numpy as np
import pytest
import torch

from speakerlm_hf.data.audio import speed_perturb
from speakerlm_hf.data.collator import SpeakerLMDataCollator, relabel_turns
from speakerlm_hf.data.registration import (
    CHINESE_NAMES,
    DEFAULT_NAMES,
    ENGLISH_NAMES,
    MODES,
    RegistrationSampler,
    SpeakerBank,
    name_pool,
    present_speakers,
    speaker_identity,
)
from speakerlm_hf.processing_speakerlm import IGNORE_INDEX, check_speaker_names, format_role_transcript
from speakerlm_hf.testing_utils import tiny_config, tiny_processor, tiny_tokenizer

RATE = 16000


def noise(seconds: float, seed: int) -> dict:
    array = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)
    return {"array": array, "sampling_rate": RATE}


def row(session: int, speakers=("A", "B", "C"), pools=True) -> dict:
    turns = [
        {"speaker": f"S{session}{s}", "start": 2.0 - i * 0.5, "end": 3.0 + i, "text": f"words of {s}"}
        for i, s in enumerate(speakers)
    ]
    enrollment = [
        {
            "speaker": f"S{session}{s}",
            "clips": [noise(1.5, 10 * session + i), noise(2.0, 100 + 10 * session + i)],
        }
        for i, s in enumerate(speakers)
    ]
    return {
        "id": f"row{session}",
        "corpus": "toy",
        "session": f"S{session}",
        "audio": noise(4.0, session),
        "turns": turns,
        "enrollment": enrollment if pools else enrollment[:-1],
    }


@pytest.fixture(scope="module")
def bank():
    sessions, identities = [], []
    for session in range(30):
        for speaker in "ABCD":
            sessions.append(f"S{session}")
            identities.append(speaker_identity("toy", f"S{session}{speaker}"))
    # One person who also attends session 0 as S0A, recorded in session 29 under the same id.
    sessions.append("S29")
    identities.append(speaker_identity("toy", "S0A"))
    embeddings = np.random.default_rng(0).standard_normal((len(sessions), 16)).astype(np.float32)
    return SpeakerBank(sessions, identities, embeddings)


@pytest.fixture(scope="module")
def processor():
    tokenizer = tiny_tokenizer()
    return tiny_processor(tokenizer, tiny_config(tokenizer))


class FixedDraw:
    """A generator stand-in whose `random()` returns the given values."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_modes_follow_the_spec_thresholds(bank):
    sampler = RegistrationSampler(bank)
    draws = [sampler.draw_mode(FixedDraw([u])) for u in (0.0, 0.3333, 0.3334, 0.6666, 0.6667, 0.9999)]
    assert draws == ["match", "match", "no", "no", "over", "over"]
    rng = np.random.default_rng(0)
    counts = {m: 0 for m in MODES}
    for _ in range(30000):
        counts[sampler.draw_mode(rng)] += 1
    assert all(abs(c / 30000 - 1 / 3) < 0.01 for c in counts.values()), counts


def test_per_batch_draws_once_and_per_sample_draws_each(bank):
    rng = np.random.default_rng(1)
    per_batch = RegistrationSampler(bank)
    assert all(len(set(per_batch.batch_modes(8, rng))) == 1 for _ in range(20))
    per_sample = RegistrationSampler(bank, per_batch=False)
    assert any(len(set(per_sample.batch_modes(8, rng))) > 1 for _ in range(20))


def test_over_regist_extras_come_from_other_sessions_with_fresh_names(bank):
    sampler = RegistrationSampler(bank, probabilities=(0, 0, 1))
    rng = np.random.default_rng(2)
    example = row(0)
    counts = []
    for _ in range(300):
        registration = sampler.register(example, "over", rng)
        names = list(registration.speakers)
        check_speaker_names(names)
        present = present_speakers(example["turns"])
        assert set(registration.labels) == set(present)
        assert set(registration.labels.values()) <= set(names) <= set(DEFAULT_NAMES)
        extras = [
            value["embedding"]
            for name, value in registration.speakers.items()
            if name not in registration.labels.values()
        ]
        counts.append(len(extras))
        for vector in extras:
            (index,) = np.flatnonzero((bank.embeddings == vector).all(axis=1))
            assert bank.sessions[index] != "S0"
            assert bank.identities[index] not in {speaker_identity("toy", s) for s in present}
        for speaker in present:
            clips = registration.speakers[registration.labels[speaker]]
            assert len(clips) == 1 and any(clips[0] is c for e in example["enrollment"] for c in e["clips"])
    assert min(counts) == 1 and max(counts) == 50
    assert abs(np.mean(counts) - 25.5) < 2.5


def test_no_regist_labels_in_order_of_first_appearance(bank):
    example = row(3)  # turns start: A at 2.0 s, B at 1.5 s, C at 1.0 s
    registration = RegistrationSampler(bank).register(example, "no", np.random.default_rng(0))
    assert registration.mode == "no" and registration.speakers == {}
    assert registration.labels == {"S3C": "spk0", "S3B": "spk1", "S3A": "spk2"}
    assert [t["speaker"] for t in relabel_turns(example["turns"], registration.labels)] == [
        "spk0",
        "spk1",
        "spk2",
    ]


def test_a_speaker_without_enrollment_falls_back_to_no_regist(bank):
    sampler = RegistrationSampler(bank)
    registration = sampler.register(row(1, pools=False), "match", np.random.default_rng(0))
    assert registration.mode == "no" and registration.speakers == {}
    embedded = RegistrationSampler(bank, enrollment="embeddings").register(
        row(1, pools=False), "match", np.random.default_rng(0)
    )
    assert embedded.mode == "match"
    for speaker, name in embedded.labels.items():
        np.testing.assert_array_equal(
            embedded.speakers[name]["embedding"], bank.embedding("S1", f"toy/{speaker}")
        )


def test_sampler_arguments_are_checked(bank):
    with pytest.raises(ValueError, match="need a SpeakerBank"):
        RegistrationSampler(None)
    RegistrationSampler(None, probabilities=(1, 1, 0))
    with pytest.raises(ValueError, match="looks like an anonymous label"):
        RegistrationSampler(bank, names=["Mike", "spk3"])
    with pytest.raises(ValueError, match="more names"):
        RegistrationSampler(bank, names=["Mike", "Lucy"], probabilities=(1, 0, 0)).register(
            row(0), "match", np.random.default_rng(0)
        )


def test_collator_builds_labelled_batches(bank, processor):
    features = [row(0), row(1, speakers=("A", "B"))]
    collator = SpeakerLMDataCollator(processor, None)
    batch = collator(features)
    tokenizer = processor.tokenizer
    for i, feature in enumerate(features):
        labels = batch["labels"][i]
        expected = format_role_transcript(
            relabel_turns(
                feature["turns"],
                {
                    t["speaker"]: f"spk{k}"
                    for k, t in enumerate(sorted(feature["turns"], key=lambda t: t["start"]))
                },
            )
        )
        assert tokenizer.decode(labels[labels != IGNORE_INDEX]) == expected + "<|im_end|>"
        prompt_length = int((labels != IGNORE_INDEX).long().argmax())
        assert (labels[:prompt_length] == IGNORE_INDEX).all()
        assert torch.equal(
            batch["input_ids"][i][prompt_length:][labels[prompt_length:] != IGNORE_INDEX],
            labels[labels != IGNORE_INDEX],
        )
    assert "speaker_embeddings" not in batch and batch["input_features"].shape[0] == 2

    matched = SpeakerLMDataCollator(
        processor, RegistrationSampler(bank, probabilities=(1, 0, 0), clips_per_speaker=2), timestamps=1.0
    )(features)
    labels = matched["labels"][0]
    answer = tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert answer.startswith("[1.0-5.0] ") and "spk" not in answer
    # 3 + 2 registered speakers, two clips each, every clip one piece.
    assert matched["enrollment_features"].shape[0] == 10 and matched["speaker_embeddings"].shape == (5, 16)
    assert matched["enrollment_speaker_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]

    asr = SpeakerLMDataCollator(processor, task="asr")([{**features[0], "text": "plain words"}, features[1]])
    answers = [tokenizer.decode(ids[ids != IGNORE_INDEX]) for ids in asr["labels"]]
    assert answers == ["plain words<|im_end|>", "words of B words of A<|im_end|>"]


def test_collator_draws_are_seeded_per_worker(bank, processor):
    features = [row(s) for s in range(6)]
    dataset = [features[i : i + 2] for i in range(0, 6, 2)]

    def run():
        collator = SpeakerLMDataCollator(
            processor, RegistrationSampler(bank, max_extra=5), timestamps=0.5, seed=3
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, collate_fn=collator)
        return [batch["input_ids"] for batch in loader]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    in_process = SpeakerLMDataCollator(
        processor, RegistrationSampler(bank, max_extra=5), timestamps=0.5, seed=3
    )
    direct = [in_process(batch)["input_ids"] for batch in dataset]
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, direct, strict=True))


def test_name_pools_by_language_and_from_a_file(bank, tmp_path):
    assert name_pool("all") == list(DEFAULT_NAMES) == list(ENGLISH_NAMES + CHINESE_NAMES)
    assert all(n.isascii() for n in name_pool("english")) and len(name_pool("english")) >= 100
    assert not any(n.isascii() for n in name_pool("chinese"))
    listed = tmp_path / "names.txt"
    listed.write_text("Ada\nGrace\n\nLinus\n", encoding="utf-8")
    assert name_pool(str(listed)) == ["Ada", "Grace", "Linus"]
    sampler = RegistrationSampler(bank, probabilities=(1, 0, 0), names=name_pool("english"))
    registration = sampler.register(row(0), "match", np.random.default_rng(0))
    assert set(registration.speakers) <= set(ENGLISH_NAMES)


@pytest.mark.parametrize("content", [None, "", "spk0\n"])
def test_bad_name_pools_are_refused_naming_the_pool(tmp_path, content):
    spec = str(tmp_path / "pool.txt")
    if content is not None:
        (tmp_path / "pool.txt").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="klingon" if content is None else "pool.txt"):
        name_pool(spec if content is not None else "klingon")


def test_speed_perturb_moves_pitch_and_length():
    tone = np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE).astype(np.float32)
    faster, slower = speed_perturb(tone, 1.1), speed_perturb(tone, 0.9)
    assert len(faster) == round(RATE / 1.1) + 1 and len(slower) == round(RATE / 0.9)

    def peak(wave):
        window = wave[: RATE // 2] * np.hanning(RATE // 2)
        return np.abs(np.fft.rfft(window)).argmax() * 2  # 2 Hz per bin over half a second

    assert abs(peak(faster) - 484) <= 2 and abs(peak(slower) - 396) <= 2
    assert np.array_equal(speed_perturb(tone, 1.0), tone)
    with pytest.raises(ValueError, match="positive"):
        speed_perturb(tone, 0.0)


def test_collator_speed_perturbation_scales_audio_times_and_enrollment(bank, processor):
    sampler = RegistrationSampler(bank, probabilities=(1, 0, 0), clips_per_speaker=2)
    plain = SpeakerLMDataCollator(processor, sampler, timestamps=1.0, seed=0)([row(0)])
    fast = SpeakerLMDataCollator(processor, sampler, timestamps=1.0, seed=0, speed_perturbation=(1.25, 1.25))(
        [row(0)]
    )
    labels = fast["labels"][0]
    answer = processor.tokenizer.decode(labels[labels != IGNORE_INDEX])
    # Turns 1.0-5.0 s (the earliest start, the latest end) played 1.25 times as fast: 0.8-4.0 s.
    assert answer.startswith("[0.8-4.0] "), answer
    for key in ("input_features", "enrollment_features"):
        short, long = fast[f"{key}_mask"].sum(-1), plain[f"{key}_mask"].sum(-1)
        assert (short < long).all() and (short > 0.7 * long).all(), key
    factors = SpeakerLMDataCollator(processor, speed_perturbation=(0.9, 1.1)).speed_factors(
        500, np.random.default_rng(0)
    )
    assert min(factors) >= 0.9 and max(factors) <= 1.1 and len(set(factors)) == 21

    embedded = RegistrationSampler(bank, probabilities=(1, 0, 0), enrollment="embeddings")
    with pytest.raises(ValueError, match="needs enrollment clips"):
        SpeakerLMDataCollator(processor, embedded, speed_perturbation=(1.1, 1.1))([row(0)])
    # Without a perturbation (or at factor 1) precomputed embeddings are fine.
    SpeakerLMDataCollator(processor, embedded, speed_perturbation=(1.0, 1.0))([row(0)])
    for bad in [(1.1, 0.9), (0.3, 1.0), (1.0,)]:
        with pytest.raises(ValueError, match="speed_perturbation"):
            SpeakerLMDataCollator(processor, speed_perturbation=bad)
