"""SpeakerLM-Tiny's speaker-extractor recipe: AAM loss, augmentation, EER/minDCF, a short real training run."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from speakerlm_hf.data.audio import SAMPLING_RATE
from speakerlm_hf.linking_speakerlm import VoiceThresholds
from speakerlm_hf.modeling_eres2netv2 import ERes2NetV2Model
from training.tiny.eval_speaker_extractor import (
    MeetingTurnVoices,
    SpeakerUtterances,
    all_pair_trials,
    compute_eer,
    compute_min_dcf,
    embed_waveforms,
    enrollment_turn_clips,
    evaluate_extractor,
    load_extractor,
    load_speaker_metadata,
    load_speaker_utterances,
    look_alike_metrics,
    look_alikes,
    meeting_turn_metrics,
    meeting_turn_voices,
)
from training.tiny.speaker_extractor import (
    AAMSoftmax,
    AngularPrototypical,
    AugmentConfig,
    CropStream,
    augment,
    build_extractor,
    load_meeting_speech,
    merge_utterances,
    solo_spans,
    speaker_centroids,
    speaker_crop,
    split_held_out,
    train_extractor,
)

HAS_SYNTHESIS = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def test_eer_and_min_dcf_of_hand_made_trials():
    # targets 0.9 0.8 0.3 / non-targets 0.4 0.2 0.1: a threshold in (0.3, 0.4] misses 1/3 and accepts 1/3
    scores = np.array([0.9, 0.8, 0.3, 0.4, 0.2, 0.1])
    targets = np.array([1, 1, 1, 0, 0, 0])
    assert compute_eer(scores, targets) == pytest.approx(1 / 3)
    # p=0.01: cost/0.01 = P_miss + 99 P_fa, lowest at P_miss=1/3, P_fa=0
    assert compute_min_dcf(scores, targets, p_target=0.01) == pytest.approx(1 / 3)
    assert compute_min_dcf(scores, targets, p_target=0.5) == pytest.approx(1 / 3)
    # the rates cross between operating points (miss 0, fa 1/4) and (miss 1/2, fa 1/4): interpolated
    assert compute_eer(
        np.array([0.9, 0.6, 0.7, 0.5, 0.1, 0.0]), np.array([1, 1, 0, 0, 0, 0])
    ) == pytest.approx(0.25)
    assert compute_eer(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0])) == 0.0
    assert compute_eer(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 1.0
    # tied scores move together: one threshold cannot split them
    assert compute_eer(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 1, 0, 0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both target and non-target"):
        compute_eer(np.array([0.1, 0.2]), np.array([1, 1]))


def test_all_pair_trials_score_every_pair_once():
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), dim=-1)
    scores, targets = all_pair_trials(embeddings, np.array([0, 0, 1]))
    np.testing.assert_allclose(scores, [math.sqrt(0.5), 0.0, math.sqrt(0.5)], atol=1e-6)
    assert targets.tolist() == [1, 0, 0]


def test_aam_softmax_target_logit_is_scaled_cos_theta_plus_margin():
    head = AAMSoftmax(embedding_size=2, num_classes=2, scale=32.0, margin=0.2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    theta = 0.5
    embedding = torch.tensor([[math.cos(theta), math.sin(theta)]]) * 7.0
    loss, logits = head(embedding, torch.tensor([0]))
    np.testing.assert_allclose(
        logits[0].tolist(), [32 * math.cos(theta + 0.2), 32 * math.sin(theta)], rtol=1e-5
    )
    expected = -torch.log_softmax(logits, dim=1)[0, 0]
    assert loss.item() == pytest.approx(expected.item())
    head.margin = 0.0
    assert head(embedding, torch.tensor([0]))[1][0, 0].item() == pytest.approx(32 * math.cos(theta), rel=1e-5)


def test_angular_prototypical_loss_of_known_pairs():
    loss_fn = AngularPrototypical(init_w=10.0, init_b=-5.0)
    # pairs (a0, p0), (a1, p1): cos = identity, logits w * I + b: each row [5, -5]
    embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    loss = loss_fn(embeddings, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-10.0)), abs=1e-6)
    # swapped positives: each anchor's own positive is orthogonal, the other one identical
    swapped = loss_fn(embeddings[[0, 3, 2, 1]], torch.tensor([0, 0, 1, 1]))
    assert swapped.item() == pytest.approx(math.log(1 + math.exp(10.0)), rel=1e-4)
    # two pairs of one speaker: the other pair is masked, not a negative
    assert loss_fn(embeddings[[0, 3, 2, 1]], torch.tensor([0, 0, 0, 0])).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_pair_stream_yields_two_utterances_of_one_speaker():
    data = _constant_utterances([[SAMPLING_RATE] * 3] * 4)
    stream = iter(CropStream(data, max_seconds=0.5, seed=0, pairs=True))
    for _ in range(20):
        first, second = next(stream), next(stream)
        assert first["label"] == second["label"]
        assert first["waveform"].size == SAMPLING_RATE // 2
        (a,), (b,) = _sources([first["waveform"]]), _sources([second["waveform"]])
        assert a != b and data.labels[a] == data.labels[b] == first["label"]


def _recipes(*entries):
    return {
        name: {"id": name, "voice": voice, "variant": variant, "pitch": pitch}
        for name, voice, variant, pitch in entries
    }


def test_look_alikes_share_the_timbre_but_not_the_accent(tmp_path):
    metadata = _recipes(
        ("a", "en-us", "Alicia", 72),
        ("b", "en-gb", "Alicia", 72),  # a's look-alike
        ("c", "en-gb-scotland", "Alicia", 82),  # 10 away: still one
        ("d", "en-029", "Alicia", 83),  # 11 away from a, 1 from c
        ("e", "en-us", "Alicia", 70),  # a's accent too: a different recording of one voice
        ("f", "en-gb", "robert", 72),  # another timbre
    )
    speakers = ["a", "b", "c", "d", "e", "f", "g"]  # g has no recipe
    kin = [sorted(others.tolist()) for others in look_alikes(speakers, metadata)]
    assert kin == [[1, 2], [0, 2, 4], [0, 1, 3], [2], [1], [], []]
    # corpus and meeting listings are read together; anything else is skipped
    corpus, meetings = tmp_path / "corpus", tmp_path / "meetings"
    corpus.mkdir(), meetings.mkdir()
    (corpus / "speakers.json").write_text(json.dumps([metadata["a"], metadata["b"]]))
    (meetings / "train-random-speakers.json").write_text(json.dumps([metadata["f"]]))
    found = load_speaker_metadata(corpus, meetings, meetings / "data" / "train-00000.parquet")
    assert sorted(found) == ["a", "b", "f"] and found["f"]["variant"] == "robert"


def test_look_alike_stream_draws_a_speaker_with_its_look_alikes():
    data = _constant_utterances([[SAMPLING_RATE] * 3] * 6)
    kin = [np.array(others, dtype=np.int64) for others in ([1, 2], [0], [0], [], [], [])]
    stream = iter(CropStream(data, max_seconds=0.5, seed=0, pairs=True, kin=kin, group=3))
    firsts = set()
    for _ in range(60):
        crops = [next(stream) for _ in range(6)]
        labels = [crop["label"] for crop in crops]
        # three speakers, two crops (of two utterances) each
        assert labels[0::2] == labels[1::2] and len(set(labels)) == 3
        for first, second in zip(crops[0::2], crops[1::2], strict=True):
            (a,), (b,) = _sources([first["waveform"]]), _sources([second["waveform"]])
            assert a != b and data.labels[a] == data.labels[b] == first["label"]
        anchor = labels[0]
        firsts.add(anchor)
        # every look-alike of the first speaker comes along, random others fill the group
        assert set(kin[anchor].tolist()) <= set(labels[2::2])
    assert firsts == set(range(6))


def test_look_alike_trials_keep_only_the_speakers_look_alikes():
    # two enrollments (speakers 0 and 1) against four turns of speakers 0, 1, 2 and 0
    scores = np.array([[0.9, 0.8, 0.1, 0.4], [0.7, 0.6, 0.2, 0.5]])
    enrollment_labels, turn_labels = np.array([0, 1]), np.array([0, 1, 2, 0])
    targets = (enrollment_labels[:, None] == turn_labels[None, :]).astype(np.int64)
    kin = [np.array([1]), np.array([0]), np.array([], dtype=np.int64)]
    turn_scores = np.array([[0.9, 0.7], [0.8, 0.6], [0.1, 0.2], [0.4, 0.5]])
    out = look_alike_metrics(
        scores, targets, enrollment_labels, turn_labels, turn_scores, np.array([0, 1]), kin
    )
    # targets 0.9, 0.4 (speaker 0), 0.6 (speaker 1); non-targets 0.8 (0 vs 1's turn), 0.7, 0.5 (1 vs 0's)
    assert out["target_trials"] == 3 and out["nontarget_trials"] == 3
    assert out["eer"] == pytest.approx(
        compute_eer(np.array([0.9, 0.4, 0.6, 0.8, 0.7, 0.5]), np.array([1, 1, 1, 0, 0, 0]))
    )
    # turn 0: 0.9 > 0.7 right; turn 1: 0.6 < 0.8 wrong; turn 2 has no look-alike; turn 3: 0.4 < 0.5 wrong
    assert out["turns"] == 3 and out["identification_accuracy"] == pytest.approx(1 / 3)
    assert out["speakers_with_look_alikes"] == 2


def test_meeting_turn_trials_stay_within_a_meeting_and_clustering_counts_its_speakers():
    one, other, third = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    near = [0.9, math.sqrt(1 - 0.81), 0.0]  # cosine 0.9 with `one`
    # "a": two people far apart, and a third whose only turn is too short to be a trial
    a = MeetingTurnVoices(
        "a", ["x", "y", "x", "y", "z"], np.array([one, other, one, other, third]), np.array([2, 2, 2, 2, 0.5])
    )
    # "b": two people whose voices sit at cosine 0.9, which relabelling at 0.75 joins
    b = MeetingTurnVoices("b", ["x", "y", "x"], np.array([one, near, one]), np.full(3, 2.0))
    found = meeting_turn_metrics([a, b], VoiceThresholds(relabel=0.75, short=0.4))
    pairs = found["pairs"]
    # a: 2 same-person pairs, 4 others (all at cosine 0); b: 1 same-person pair, 2 others at 0.9.
    # Pairs across the meetings ("x" of a with "x" of b) are no trials.
    assert (pairs["target_trials"], pairs["nontarget_trials"]) == (3, 6)
    assert pairs["nontarget_at_relabel"] == pytest.approx(2 / 6)
    assert pairs["eer"] == 0.0
    assert found["speaker_count"] == {"right": 0.5, "merged": 0.5, "split": 0.0, "merged_meetings": ["b"]}
    assert found["turns"] == 8
    # b's merge puts y's 2 s with x: 2 of the 14.5 s of turns; a's short "z" keeps its own speaker
    assert found["confused_seconds"] == pytest.approx(2 / 14.5)
    # the short turn joins a longer speaker unless the short threshold keeps it apart
    joined = meeting_turn_metrics([a], VoiceThresholds(relabel=0.75, short=-1.0))
    assert joined["speaker_count"]["merged_meetings"] == ["a"]
    assert joined["confused_seconds"] == pytest.approx(0.5 / 8.5)
    assert meeting_turn_metrics([b], VoiceThresholds(relabel=0.95))["speaker_count"]["right"] == 1.0


def test_meeting_turn_voices_embed_each_reference_turn_from_its_own_audio():
    audio = np.zeros(6 * SAMPLING_RATE, dtype=np.float32)
    audio[: 2 * SAMPLING_RATE] = 0.1
    audio[3 * SAMPLING_RATE : 5 * SAMPLING_RATE] = 0.5
    session = {
        "id": "m",
        "audio": audio,
        # out of time order on purpose
        "turns": [
            {"speaker": "B", "start": 3.0, "end": 5.0, "text": "later"},
            {"speaker": "A", "start": 0.0, "end": 2.0, "text": "first"},
        ],
    }

    def embed(clips):
        return np.array([[float(np.mean(clip)), 1.0] for clip in clips])

    (found,) = meeting_turn_voices([session], embed)
    assert found.session == "m" and found.speakers == ["A", "B"]
    np.testing.assert_allclose(found.vectors[:, 0], [0.1, 0.5], atol=1e-6)
    np.testing.assert_allclose(found.seconds, [2.0, 2.0], atol=0.05)


def test_augment_adds_noise_at_the_drawn_snr():
    rng = np.random.default_rng(0)
    speech = (0.1 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    config = AugmentConfig(
        noise_probability=1.0, snr_range=(10.0, 10.0), reverb_probability=0.0, gain_db_range=(0.0, 0.0)
    )
    noisy = augment(speech, rng, config)
    noise = noisy - speech
    snr = 20 * np.log10(np.sqrt(np.mean(speech**2)) / np.sqrt(np.mean(noise**2)))
    assert snr == pytest.approx(10.0, abs=0.01)
    quiet = augment(
        speech, rng, AugmentConfig(noise_probability=0.0, reverb_probability=0.0, gain_db_range=(-6.0, -6.0))
    )
    np.testing.assert_allclose(quiet, speech * 10 ** (-6 / 20), rtol=1e-5)


def _constant_utterances(lengths_by_speaker: list[list[int]]) -> SpeakerUtterances:
    """Utterance k is the constant k + 1, so a clip tells which utterances it was cut from."""
    waveforms, labels = [], []
    for label, lengths in enumerate(lengths_by_speaker):
        for length in lengths:
            waveforms.append(np.full(length, len(waveforms) + 1, dtype=np.int16))
            labels.append(label)
    return SpeakerUtterances(waveforms, np.array(labels), [f"s{i}" for i in range(len(lengths_by_speaker))])


def _sources(clips: list[np.ndarray]) -> set[int]:
    """Indices of the constant utterances the clips were cut from."""
    return {int(v) - 1 for clip in clips for v in np.unique(np.round(clip * 32768))}


def test_crops_and_clips_stay_within_one_speaker():
    second = SAMPLING_RATE
    data = _constant_utterances([[second] * 6, [2 * second] * 6, [second // 2] * 6])
    rng = np.random.default_rng(1)
    by_speaker = data.indices_by_speaker()
    crop = speaker_crop(data, by_speaker, 12, 3 * second, rng)  # speaker 2's 0.5 s utterances joined
    assert crop.size == 3 * second
    sources = _sources([crop])
    assert 12 in sources and sources <= set(by_speaker[2].tolist())

    enrollments, enrollment_labels, turns, turn_labels = enrollment_turn_clips(data, rng)
    assert (
        enrollment_labels.tolist() == [0, 0, 1, 1, 2, 2]
        and turn_labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    )
    assert all(3 * second <= e.size <= 10 * second for e in enrollments)
    assert all(2 * second <= t.size <= 4 * second for t in turns)
    for label in range(3):
        enrolled = _sources([e for e, k in zip(enrollments, enrollment_labels, strict=True) if k == label])
        spoken = _sources([t for t, k in zip(turns, turn_labels, strict=True) if k == label])
        assert enrolled.isdisjoint(spoken)
        assert enrolled | spoken <= set(by_speaker[label].tolist())
    _, _, short, short_labels = enrollment_turn_clips(data, rng, turn_seconds=(0.5, 1.0))
    assert short_labels.tolist() == turn_labels.tolist()
    assert all(second // 2 <= t.size <= second for t in short)


def test_held_out_speakers_leave_the_train_set():
    data = _constant_utterances([[100] * 3] * 5)
    train, held = split_held_out(data, 2, seed=0)
    assert len(train.speakers) == 3 and len(held.speakers) == 2
    assert set(train.speakers).isdisjoint(held.speakers)
    assert len(train) == 9 and len(held) == 6
    assert train.labels.max() == 2


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from training.synthetic.corpus import generate_corpus

    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, 48, 24, seed=3, num_train_speakers=8, num_test_speakers=4, workers=1)
    return out


@pytest.mark.skipif(not HAS_SYNTHESIS, reason="needs espeak-ng and sox")
def test_short_training_lowers_the_aam_loss_and_saves_a_reloadable_extractor(tiny_corpus, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "extractor"
    extractor, summary = train_extractor(
        tiny_corpus,
        out,
        steps=20,
        arch="eres2netv2",
        batch_size=16,
        crop_seconds=(0.5, 0.5),
        learning_rate=3e-3,
        warmup_steps=2,
        margin_warmup_steps=0,
        prototypical_weight=0.0,
        augment_config=None,
        held_out_speakers=2,
        eval_every=10,
        save_every=20,
        logging_steps=1,
        threads=1,
        config_overrides={"m_channels": 16, "num_blocks": [1, 1, 1, 1], "embedding_size": 32},
    )
    losses = [loss for _, loss in summary["losses"]]
    assert len(losses) == 20
    # seeds 0-3 of this setting end at 0.54-0.61 of the starting loss
    assert np.mean(losses[-4:]) < 0.75 * np.mean(losses[:4])
    assert summary["train_speakers"] == 6 and summary["held_out_speakers"] == 2
    assert [entry["step"] for entry in summary["held_out_eer"]] == [10, 20]
    assert (out / "checkpoints" / "checkpoint-20").is_dir()

    reloaded = ERes2NetV2Model.from_pretrained(out).eval()
    assert reloaded.config.m_channels == 16 and reloaded.config.embedding_size == 32
    features = torch.randn(2, 150, 80)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(features), extractor.eval()(features))
    assert not any(p.requires_grad for p in extractor.parameters())
    assert isinstance(load_extractor(out), ERes2NetV2Model)

    test = load_speaker_utterances(tiny_corpus, "test")
    results = evaluate_extractor(reloaded, test, seed=0)
    n = len(test)
    utterance = results["utterance"]
    assert utterance["target_trials"] + utterance["nontarget_trials"] == n * (n - 1) // 2
    assert 0.0 <= utterance["eer"] <= 1.0 and 0.0 <= results["enrollment_vs_turn"]["eer"] <= 1.0
    embeddings = embed_waveforms(reloaded, [test.waveform(0)])
    assert embeddings.shape == (1, 32) and embeddings.norm().item() == pytest.approx(1.0)


@pytest.mark.skipif(not HAS_SYNTHESIS, reason="needs espeak-ng and sox")
def test_training_continues_a_speakerlm_checkpoints_speaker_encoder(tiny_corpus, tmp_path):
    from speakerlm_hf.modeling_campplus import CAMPPlusModel
    from speakerlm_hf.testing_utils import tiny_speakerlm

    model, _ = tiny_speakerlm("campplus")
    model.save_pretrained(tmp_path / "speakerlm")
    extractor = load_extractor(tmp_path / "speakerlm")
    assert isinstance(extractor, CAMPPlusModel) and not extractor.training
    features = torch.randn(2, 150, 80)
    with torch.no_grad():
        torch.testing.assert_close(extractor(features), model.speaker_encoder.eval()(features))

    data = load_speaker_utterances(tiny_corpus, "train")
    centroids = speaker_centroids(extractor, data, seed=0, per_speaker=2, seconds=1.0)
    assert centroids.shape == (len(data.speakers), extractor.config.embedding_size)
    torch.testing.assert_close(centroids.norm(dim=-1), torch.ones(len(data.speakers)))

    with pytest.raises(ValueError, match="config_overrides cannot change"):
        train_extractor(
            tiny_corpus, tmp_path / "x", init_from=tmp_path / "speakerlm", config_overrides={"a": 1}
        )
    with pytest.raises(ValueError, match="must hold whole groups of 6 crops"):
        train_extractor(tiny_corpus, tmp_path / "x", batch_size=8, look_alike_group=3)
    out = tmp_path / "continued"
    continued, summary = train_extractor(
        tiny_corpus,
        out,
        steps=2,
        batch_size=8,
        crop_seconds=(0.5, 0.5),
        learning_rate=1e-3,
        warmup_steps=0,
        augment_config=None,
        held_out_speakers=2,
        eval_every=0,
        save_every=0,
        threads=1,
        init_from=tmp_path / "speakerlm",
        data_seed=4,
        look_alike_group=2,
    )
    assert summary["arch"] == "campplus" and summary["data_seed"] == 4
    assert summary["look_alike_group"] == 2
    assert summary["init_from"] == str(tmp_path / "speakerlm")
    assert continued.config.embedding_size == model.config.speaker_config.embedding_size
    start = dict(extractor.named_parameters())
    moved = [name for name, p in continued.named_parameters() if not torch.equal(p, start[name])]
    assert moved, "two optimiser steps changed no weight of the continued extractor"
    assert isinstance(load_extractor(out), CAMPPlusModel)

    (tmp_path / "speakerlm" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has no model weights.*model.safetensors"):
        load_extractor(tmp_path / "speakerlm")


def test_solo_spans_cut_out_other_speakers_and_short_stretches():
    turns = [
        {"speaker": "a", "start": 0.0, "end": 3.0},
        {"speaker": "b", "start": 2.5, "end": 5.0},
        {"speaker": "a", "start": 4.6, "end": 9.0},
        {"speaker": "c", "start": 6.0, "end": 6.5},
        {"speaker": "a", "start": 8.5, "end": 9.2},
    ]
    # a's own overlapping turns do not cut each other; c's 0.5 s back-channel splits a's second turn
    assert solo_spans(turns) == [(0, 0.0, 2.5), (1, 3.0, 4.6), (2, 5.0, 6.0), (2, 6.5, 9.0)]
    assert solo_spans(turns, min_seconds=2.0) == [(0, 0.0, 2.5), (2, 6.5, 9.0)]


def test_merged_utterances_join_speakers_by_name():
    one = SpeakerUtterances([np.zeros(3, np.int16)] * 2, np.array([0, 1]), ["x", "y"])
    two = SpeakerUtterances([np.ones(3, np.int16)] * 2, np.array([0, 1]), ["y", "z"])
    merged = merge_utterances(one, two)
    assert merged.speakers == ["x", "y", "z"]
    assert merged.labels.tolist() == [0, 1, 1, 2]
    assert [int(w[0]) for w in merged.waveforms] == [0, 0, 1, 1]


@pytest.mark.skipif(not HAS_SYNTHESIS, reason="needs espeak-ng and sox")
def test_extractor_trains_on_the_solo_speech_of_rendered_meetings(tiny_corpus, tmp_path):
    from speakerlm_hf.data.shards import decode_prepared_row, load_prepared
    from training.tiny.meetings import main as render_meetings

    folder = tmp_path / "meetings"
    render_meetings(
        ["--corpus", str(tiny_corpus), "--split", "train", "--num-sessions", "2", "--out", str(folder)]
        + ["--min-duration", "10", "--max-duration", "14", "--workers", "1", "--random-voices", "3"]
    )
    rows = [decode_prepared_row(row) for row in load_prepared(str(folder), "train", streaming=False)]
    speech = load_meeting_speech(folder)
    # every piece is the meeting's audio where one turn's speaker is alone, then the enrollment clips
    expected = []
    for row in rows:
        for index, start, end in solo_spans(row["turns"]):
            piece = row["audio"][int(round(start * SAMPLING_RATE)) : int(round(end * SAMPLING_RATE))]
            expected.append((row["turns"][index]["speaker"], piece))
        expected += [(name, clip) for name, clips in row["enrollment"].items() for clip in clips]
    assert len(speech) == len(expected) > 0
    for i, (name, piece) in enumerate(expected):
        assert speech.speakers[speech.labels[i]] == name
        np.testing.assert_allclose(speech.waveform(i), piece, atol=1 / 32768)
        assert speech.waveforms[i].size >= SAMPLING_RATE
    generated = {s for s in speech.speakers if "-r" in s}
    assert generated, "no speaker with a generated voice in the meetings"

    _, summary = train_extractor(
        tiny_corpus,
        tmp_path / "extractor",
        steps=2,
        arch="eres2netv2",
        batch_size=8,
        crop_seconds=(0.5, 0.5),
        augment_config=None,
        held_out_speakers=2,
        eval_every=0,
        save_every=0,
        threads=1,
        config_overrides={"m_channels": 8, "num_blocks": [1, 1, 1, 1], "embedding_size": 16},
        meetings=[folder],
    )
    corpus_speakers = set(load_speaker_utterances(tiny_corpus, "train").speakers)
    assert summary["train_speakers"] == len(corpus_speakers) - 2 + len(generated)
    assert summary["meetings"] == [str(folder)]
    with pytest.raises(ValueError, match="no single-speaker speech"):
        load_meeting_speech(folder, min_seconds=1000.0)


def test_campplus_tiny_extractor_size():
    model = build_extractor("campplus").eval()
    assert sum(p.numel() for p in model.parameters()) == 1_220_660
    assert model(torch.randn(1, 120, 80)).shape == (1, 192)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_extractor("xvector")


def test_replace_extractor_swaps_only_the_speaker_encoder(tmp_path):
    from safetensors.torch import load_file

    from speakerlm_hf.testing_utils import tiny_speakerlm
    from training.tiny.replace_extractor import main as replace_main
    from training.tiny.replace_extractor import replace_extractor

    def save(model, processor, folder):
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        return folder

    model, processor = tiny_speakerlm("campplus", seed=0)
    donor, _ = tiny_speakerlm("campplus", seed=1)
    base = save(model, processor, tmp_path / "base")
    donor.speaker_encoder.save_pretrained(tmp_path / "extractor")
    out = tmp_path / "swapped"
    assert replace_extractor(base, tmp_path / "extractor", out) > 0
    before, donor_weights, after = (
        load_file(f)
        for f in (
            base / "model.safetensors",
            tmp_path / "extractor" / "model.safetensors",
            out / "model.safetensors",
        )
    )
    assert after.keys() == before.keys()
    for name, tensor in after.items():
        if name.startswith("speaker_encoder."):
            assert torch.equal(tensor, donor_weights[name.removeprefix("speaker_encoder.")]), name
        else:
            assert torch.equal(tensor, before[name]), name
    assert any(not torch.equal(after[n], before[n]) for n in after if n.startswith("speaker_encoder."))

    # an extractor of another architecture or size is refused, and nothing is written
    other, _ = tiny_speakerlm("eres2netv2", seed=0)
    other.speaker_encoder.save_pretrained(tmp_path / "eres2net")
    with pytest.raises(ValueError, match="ERes2NetV2Model.*CAMPPlusModel"):
        replace_extractor(base, tmp_path / "eres2net", tmp_path / "refused")
    small = build_extractor("campplus", embedding_size=32, block_layers=[1, 1, 1])
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(SystemExit, match="does not have the sizes"):
        replace_main(
            ["--model", str(base), "--extractor", str(tmp_path / "small"), "--out", str(tmp_path / "refused")]
        )
    assert not (tmp_path / "refused").exists()
    with pytest.raises(SystemExit, match="already exists|not empty"):
        replace_main(["--model", str(base), "--extractor", str(tmp_path / "extractor"), "--out", str(out)])
