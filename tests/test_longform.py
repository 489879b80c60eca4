"""Long recordings end to end: VAD and segmentation, streamed decoding, speaker linking, the pipeline,
the transcript writers and `speakerlm transcribe`, on a 3.5-minute espeak-ng meeting of four speakers."""

import json
import re
import shutil
import subprocess
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from speakerlm_hf import cli, hub, pipeline_speakerlm
from speakerlm_hf.audio_frontend import kaldi_fbank, resample
from speakerlm_hf.data.toy_corpus import TOY_SENTENCES, espeak
from speakerlm_hf.formats import (
    EXTENSIONS,
    FORMATS,
    format_rttm,
    format_srt,
    format_stm,
    format_txt,
    format_vtt,
    parse_formats,
    write_transcript,
)
from speakerlm_hf.linking_speakerlm import (
    cluster_embeddings,
    link_segments,
    local_speaker_embeddings,
    model_embedder,
    speaker_bounds,
    speaker_clips,
)
from speakerlm_hf.metrics.readers import read_json, read_role_transcript, read_stm
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.pipeline_speakerlm import TASK
from speakerlm_hf.segmentation_speakerlm import (
    FfmpegSource,
    SoundFileSource,
    open_audio,
    plan_segments,
    read_segments,
    segment_recording,
)
from speakerlm_hf.testing_utils import tiny_speakerlm

RATE = 16000
VOICES = {"A": ("en+m3", 150), "B": ("en+f2", 175), "C": ("en+m7", 140), "D": ("en+f4", 165)}
# Who talks in each 42 s stretch: most segments hold two or three of the four speakers, so linking
# them takes their voices, not only the rule that one segment's speakers are different people.
PHASES = (("A", "B"), ("C", "D", "A"), ("B", "C"), ("D", "A"), ("B", "D", "C"))
PHASE_SECONDS = 42.0
SENTENCES = TOY_SENTENCES[:8]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng speech at 16 kHz, trimmed to where the samples are not silent."""
    waveform = espeak(text, voice, speed)
    loud = np.flatnonzero(np.abs(waveform) > 1e-3)
    return waveform[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def clips() -> dict[tuple[str, int], np.ndarray]:
    wanted = [(speaker, k) for speaker in VOICES for k in range(len(SENTENCES))]
    with ThreadPoolExecutor(2) as pool:
        spoken = pool.map(lambda item: speak(SENTENCES[item[1]], *VOICES[item[0]]), wanted)
    return dict(zip(wanted, spoken, strict=True))


@pytest.fixture(scope="module")
def meeting(clips):
    """(waveform, reference) of a 210 s meeting: (speaker, start, end, text) utterances with 0.5-2 s pauses."""
    rng = np.random.default_rng(0)
    audio = np.zeros(int(PHASE_SECONDS * len(PHASES) * RATE), dtype=np.float32)
    reference = []
    cursor = int(0.7 * RATE)
    for number, present in enumerate(PHASES):
        end, previous = int((number + 1) * PHASE_SECONDS * RATE), None
        while True:
            speaker = str(rng.choice([s for s in present if s != previous]))
            sentence = int(rng.integers(len(SENTENCES)))
            clip = clips[(speaker, sentence)]
            if cursor + clip.size > end:
                break
            audio[cursor : cursor + clip.size] = clip
            reference.append((speaker, cursor / RATE, (cursor + clip.size) / RATE, SENTENCES[sentence]))
            cursor += clip.size + int(rng.uniform(0.5, 2.0) * RATE)
            previous = speaker
        cursor = end + int(0.5 * RATE)
    return audio, reference


@pytest.fixture(scope="module")
def meeting_wav(meeting, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "meeting.wav"
    soundfile.write(path, meeting[0], RATE, subtype="PCM_16")
    return path


def speech_frames(reference, num_frames: int) -> np.ndarray:
    mask = np.zeros(num_frames, dtype=bool)
    for _, start, end, _ in reference:
        mask[int(start * 100) : int(np.ceil(end * 100))] = True
    return mask


def check_segments(segments, reference, max_duration: float = 50.0) -> None:
    """Segments are ordered, disjoint, at most `max_duration`, cut only in pauses, and hold all speech."""
    assert all(0 < s.duration <= max_duration + 1e-9 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:], strict=False))
    for speaker, start, end, _ in reference:
        holders = [s for s in segments if s.start <= start and end <= s.end]
        assert len(holders) == 1, f"the utterance of {speaker} at {start:.2f}-{end:.2f} s is cut or dropped"
    for a, b in zip(segments, segments[1:], strict=False):
        assert not any(start < a.end and b.start < end for _, start, end, _ in reference)


def spectral_embedder(waveform: np.ndarray):
    """A deterministic voice embedding for the test: the log-mel spectrum of a clip's louder frames
    minus the recording's. (The tiny random model's speaker extractor does not separate voices.)"""
    whole = kaldi_fbank(waveform, num_mel_bins=40).numpy()
    mean = whole[whole.mean(1) > np.percentile(whole.mean(1), 50)].mean(0)

    def embed(clips):
        vectors = []
        for clip in clips:
            fbank = kaldi_fbank(clip, num_mel_bins=40).numpy()
            loud = fbank.mean(1) > np.percentile(fbank.mean(1), 30)
            vectors.append(fbank[loud].mean(0) - mean)
        return np.stack(vectors)

    return embed


def local_turns(reference, segment, names=None) -> list[dict]:
    """The reference turns inside a segment as the model writes them: local labels, segment times."""
    names = {} if names is None else dict(names)
    turns, local = [], {}
    for speaker, start, end, text in reference:
        if start >= segment.end or end <= segment.start:
            continue
        label = names.get(speaker) or local.setdefault(speaker, f"spk{len(local)}")
        turns.append(
            {
                "speaker": label,
                "text": text,
                "start": round(start - segment.start, 1),
                "end": round(end - segment.start, 1),
            }
        )
    return turns


def speaker_map(turns, reference) -> dict[str, set[str]]:
    """Output label -> the true speakers of the reference utterances its turns match in time."""
    found: dict[str, set[str]] = {}
    for turn in turns:
        match = min(reference, key=lambda r: abs(r[1] - turn["start"]) + abs(r[2] - turn["end"]))
        assert abs(match[1] - turn["start"]) < 0.1 and abs(match[2] - turn["end"]) < 0.1, turn
        found.setdefault(turn["speaker"], set()).add(match[0])
    return found


def test_vad_and_segmentation_cut_only_in_pauses(meeting):
    audio, reference = meeting
    rng = np.random.default_rng(1)
    t = np.arange(audio.size) / RATE
    # Hiss rising from -60 to -32 dBFS (about 12 dB under the speech) plus mains hum.
    noisy = audio + rng.standard_normal(audio.size) * 10 ** (np.linspace(-60, -32, audio.size) / 20)
    noisy = (noisy + 0.01 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    for waveform in (audio, noisy):
        plan = segment_recording(waveform)
        assert plan.duration == pytest.approx(audio.size / RATE)
        truth = speech_frames(reference, plan.speech.size)
        assert (plan.speech & truth).sum() / truth.sum() > 0.99
        assert (plan.speech & truth).sum() / plan.speech.sum() > 0.85
        assert 5 <= len(plan.segments) <= 7
        check_segments(plan.segments, reference)

    plan = segment_recording(audio, max_duration=20.0, min_duration=10.0)
    assert len(plan.segments) >= 11
    check_segments(plan.segments, reference, max_duration=20.0)
    # One region longer than a segment is cut where it is quietest, and nothing is lost.
    forced = plan_segments([(100, 9000)], 95.0, np.zeros(9500), max_duration=40.0)
    assert [(s.start, s.end) for s in forced] == [(0.8, 40.8), (40.8, 80.8), (80.8, 90.2)]
    # Speech running to the very end is not cut a few frames before it (a 20 ms segment cannot be
    # transcribed): the last forced cut leaves the next segment at least 1 s.
    ending = plan_segments([(100, 8082)], 80.82, np.zeros(8082), max_duration=40.0)
    assert [(s.start, s.end) for s in ending] == [(0.8, 40.8), (40.8, 79.82), (79.82, 80.82)]
    short = plan_segments([(20, 1003)], 10.03, np.zeros(1003), max_duration=6.0)
    assert min(s.end - s.start for s in short) >= 1.0 and short[-1].end == 10.03
    assert all(s.end - s.start <= 6.0 for s in short)
    assert plan_segments([(10, 50)], 30.0) == plan_segments([(10, 50), (900, 1000)], 30.0)
    assert plan_segments([], 300.0) == []


def test_streamed_decoding_of_resampled_stereo_files_matches_the_whole_file(meeting, tmp_path):
    audio, reference = meeting
    native = resample(audio, RATE, 44100)
    path = tmp_path / "meeting44.wav"
    soundfile.write(path, np.stack([native, 0.5 * native], axis=1), 44100, subtype="PCM_24")
    plan = segment_recording(path)
    assert isinstance(plan.source, SoundFileSource) and plan.source.sampling_rate == 44100
    check_segments(plan.segments, reference)
    decoded = soundfile.read(path, dtype="float32")[0].mean(1)
    whole = resample(decoded, 44100, RATE)
    for segment, piece in zip(plan.segments, read_segments(plan.source, plan.segments), strict=True):
        first = round(segment.start * RATE)
        assert piece.size == round(segment.end * RATE) - first
        np.testing.assert_allclose(piece, whole[first : first + piece.size], atol=2e-6)

    expected = [(s.start, s.end) for s in segment_recording(audio[: 100 * RATE]).segments]
    for name in ("meeting.flac", "meeting.mp3"):
        soundfile.write(tmp_path / name, (audio[: 100 * RATE] * 32767).astype(np.int16), RATE)
        found = [(s.start, s.end) for s in segment_recording(tmp_path / name).segments]
        np.testing.assert_allclose(found, expected, atol=0.02)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program")
def test_containers_soundfile_cannot_read_go_through_ffmpeg(meeting, meeting_wav, tmp_path):
    audio, reference = meeting
    m4a = tmp_path / "meeting.m4a"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(meeting_wav),
            "-t",
            "100",
            "-ar",
            "22050",
            "-c:a",
            "aac",
            str(m4a),
        ],
        check=True,
    )
    plan = segment_recording(m4a)
    assert isinstance(plan.source, FfmpegSource)
    assert plan.duration == pytest.approx(100.0, abs=0.05)
    check_segments(plan.segments, [r for r in reference if r[2] < 99.9])
    pieces = list(read_segments(plan.source, plan.segments))
    start = round(plan.segments[0].start * RATE)
    expected = audio[start : start + pieces[0].size]
    # AAC is lossy: the decoded segment follows the original closely but not exactly.
    assert np.corrcoef(pieces[0][2000:-2000], expected[2000:-2000])[0, 1] > 0.95


def test_decoding_is_streamed_in_bounded_memory(meeting, tmp_path):
    audio, _ = meeting
    path = tmp_path / "long.wav"
    with soundfile.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        for _ in range(6):  # 21 minutes: 40 MB as int16, 81 MB as float32
            handle.write(audio)
    tracemalloc.start()
    try:
        plan = segment_recording(path)
        longest = max(piece.size for piece in read_segments(plan.source, plan.segments))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.duration == pytest.approx(6 * audio.size / RATE) and len(plan.segments) >= 30
    assert longest <= 50 * RATE
    assert peak < 25e6, f"reading a 21-minute file peaked at {peak / 1e6:.0f} MB of Python allocations"


def test_cluster_embeddings_honours_groups_bounds_and_short_clips():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    voice = [0, 1, 0, 2, 1, 0, 2, 1]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    vectors = centres[voice] + 0.2 * rng.standard_normal((8, 16))
    labels = cluster_embeddings(vectors, groups, threshold=0.5)
    assert labels.tolist() == [0, 1, 0, 2, 1, 0, 2, 1]
    # Two of a group are never merged, however alike.
    assert cluster_embeddings(np.ones((2, 4)), [0, 0], threshold=0.0).tolist() == [0, 1]
    assert cluster_embeddings(np.ones((3, 4)), [0, 1, 2], threshold=0.0).tolist() == [0, 0, 0]
    # Bounds override the threshold.
    assert cluster_embeddings(vectors, groups, threshold=0.99, max_clusters=3).tolist() == labels.tolist()
    assert len(set(cluster_embeddings(vectors, groups, threshold=-1.0, min_clusters=4).tolist())) == 4
    # An odd embedding starts a cluster of its own; from a short clip, it joins the nearest cluster
    # without a member of its group instead (item 7, of the same group, is in cluster 1).
    odd = vectors.copy()
    odd[6] = -centres[2]
    assert cluster_embeddings(odd, groups, threshold=0.5).tolist() == [0, 1, 0, 2, 1, 0, 3, 1]
    weak = cluster_embeddings(odd, groups, [5, 5, 5, 5, 5, 5, 0.3, 5], threshold=0.5)
    assert weak[:6].tolist() == labels[:6].tolist() and weak[7] == 1 and weak[6] in (0, 2)
    # With a short threshold, a short clip unlike every cluster starts its own, if it has at least
    # MIN_CLIP_SECONDS of audio and the bound allows one more; a clip like a cluster still joins it.
    apart = [5, 5, 5, 5, 5, 5, 0.7, 5]
    assert cluster_embeddings(odd, groups, apart, threshold=0.5, short_threshold=0.3).tolist() == [
        0, 1, 0, 2, 1, 0, 3, 1
    ]  # fmt: skip
    assert (
        cluster_embeddings(odd, groups, apart, threshold=0.5, short_threshold=-1.0).tolist() == weak.tolist()
    )
    assert (
        cluster_embeddings(vectors, groups, apart, threshold=0.5, short_threshold=0.3).tolist()
        == labels.tolist()
    )
    tiny = cluster_embeddings(odd, groups, [5, 5, 5, 5, 5, 5, 0.3, 5], threshold=0.5, short_threshold=0.3)
    assert tiny.tolist() == weak.tolist()
    bounded = cluster_embeddings(odd, groups, apart, threshold=0.5, max_clusters=3, short_threshold=0.3)
    assert bounded.tolist() == weak.tolist()
    # short clips are placed longest first: the longer one founds the cluster the shorter one joins
    pair = np.stack([centres[0], centres[0], -centres[0], -centres[0] + 0.1 * centres[1]])
    assert cluster_embeddings(pair, [0, 1, 2, 3], [5, 5, 0.6, 0.9], 0.5, short_threshold=0.3).tolist() == [
        0, 0, 1, 1
    ]  # fmt: skip
    assert speaker_bounds(4, None, None, registered_found=1) == (3, 3)
    assert speaker_bounds(None, 2, 5, registered_found=0) == (2, 5)
    assert speaker_bounds(None, None, 1, registered_found=2) == (1, 1)


def test_speaker_clips_leave_out_overlap_and_silence():
    waveform = np.arange(10 * RATE, dtype=np.float32)
    turns = [
        {"speaker": "spk0", "text": "a", "start": 0.0, "end": 4.0},
        {"speaker": "spk1", "text": "b", "start": 3.0, "end": 6.0},
        {"speaker": "Mike", "text": "c", "start": 6.0, "end": 8.0},
        {"speaker": "spk0", "text": "d", "start": "x", "end": None},  # unparsable: the whole segment
    ]
    silence = np.ones(1000, dtype=bool)
    silence[100:150] = False
    clips = speaker_clips(waveform, turns[:3], ["Mike"], silence)
    assert list(clips) == ["spk0", "spk1"]
    assert clips["spk0"][1] == pytest.approx(2.5)  # 0-4 s minus 1-1.5 s (silent) and 3-4 s (overlap)
    assert clips["spk0"][0][0] == 0 and clips["spk0"][0][RATE] == 1.5 * RATE
    assert clips["spk1"][1] == pytest.approx(2.0)
    whole = speaker_clips(waveform, turns, ["Mike"])
    assert whole["spk0"][1] == pytest.approx(10.0 - 3.0 - 2.0)  # own everywhere but where others talk


def test_linking_reference_turns_finds_four_consistent_speakers(meeting):
    audio, reference = meeting
    plan = segment_recording(audio)
    embed = spectral_embedder(audio)
    segments = []
    for segment, piece in zip(plan.segments, read_segments(plan.source, plan.segments), strict=True):
        turns = local_turns(reference, segment)
        segments.append(
            {
                "start": segment.start,
                "end": segment.end,
                "turns": turns,
                "speakers": local_speaker_embeddings(piece, turns, embed, (), plan.speech_mask(segment)),
            }
        )
    # Some segments hold only two or three voices: the rule that one segment's speakers differ is not enough.
    assert min(len(s["speakers"]) for s in segments) <= 3

    for hints in ({}, {"num_speakers": 4}, {"max_speakers": 4, "threshold": 0.99}, {"min_speakers": 4}):
        hints = {"threshold": 0.67, **hints}
        turns = link_segments(segments, **hints)
        assert len(turns) == len(reference)
        found = speaker_map(turns, reference)
        assert sorted(found) == ["spk0", "spk1", "spk2", "spk3"], hints
        assert all(len(true) == 1 for true in found.values()), (hints, found)
        assert len(set().union(*found.values())) == 4
        assert turns[0]["speaker"] == "spk0" and turns[0]["start"] == pytest.approx(reference[0][1], abs=0.1)
    # Without a hint a strict threshold splits voices; with one, the count is kept.
    assert len({t["speaker"] for t in link_segments(segments, threshold=0.99)}) > 4
    assert len({t["speaker"] for t in link_segments(segments, threshold=0.99, num_speakers=4)}) == 4


class ScriptedGenerate:
    """Stands in for `generate`: answers each segment with its reference turns in the model's format.

    The rest of the pipeline runs for real; the segments are those `segment_recording` plans.
    """

    def __init__(self, tokenizer, segments, reference, names=None):
        self.tokenizer, self.segments, self.reference, self.names = tokenizer, segments, reference, names
        self.batches: list[int] = []
        self.prompts: list[str] = []

    def __call__(self, input_ids, **kwargs):
        rows = []
        for ids in input_ids:
            segment = self.segments[sum(self.batches) + len(rows)]
            turns = local_turns(self.reference, segment, self.names)
            text = "\n".join(f"[{t['start']:.1f}-{t['end']:.1f}] {t['speaker']}: {t['text']}" for t in turns)
            rows.append(
                self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            )
            self.prompts.append(self.tokenizer.decode(ids))
        self.batches.append(len(rows))
        longest = max(len(row) for row in rows)
        new = torch.tensor([row + [self.tokenizer.pad_token_id] * (longest - len(row)) for row in rows])
        return torch.cat([input_ids, new], dim=1)


@pytest.fixture(scope="module")
def tiny():
    hub.register_auto_classes()
    model, processor = tiny_speakerlm()
    return model, processor


def test_pipeline_links_speakers_across_batched_segments(tiny, meeting, meeting_wav, tmp_path, monkeypatch):
    model, processor = tiny
    audio, reference = meeting
    mike = tmp_path / "mike.wav"
    soundfile.write(mike, np.concatenate([speak(SENTENCES[0], *VOICES["A"])] * 2), RATE)
    plan = segment_recording(meeting_wav)
    script = ScriptedGenerate(processor.tokenizer, plan.segments, reference, names={"A": "Mike"})
    monkeypatch.setattr(model, "generate", script)
    monkeypatch.setattr(pipeline_speakerlm, "model_embedder", lambda _: spectral_embedder(audio))
    pipe = pipeline(TASK, model=model, processor=processor)
    progress = []
    result = pipe(
        str(meeting_wav),
        speakers={"Mike": str(mike)},
        batch_size=2,
        return_timestamps=True,
        linking_threshold=0.67,
        progress_callback=lambda done, total: progress.append((done, total)),
    )
    count = len(plan.segments)
    assert script.batches == batches(count, 2)
    assert progress == [(min(done, count), count) for done in range(2, count + 2, 2)]
    assert len(script.prompts) == count
    assert all("Mike" in p and "Transcribe by roles with timestamps." in p for p in script.prompts)
    turns = result["turns"]
    assert len(turns) == len(reference)
    found = speaker_map(turns, reference)
    assert found["Mike"] == {"A"}
    assert sorted(found) == ["Mike", "spk0", "spk1", "spk2"]
    assert all(len(true) == 1 for true in found.values()) and set().union(*found.values()) == set(VOICES)
    assert [t["text"] for t in turns] == [r[3] for r in reference]
    assert (
        result["text"].splitlines()[0]
        == f"[{turns[0]['start']:.1f}-{turns[0]['end']:.1f}] {turns[0]['speaker']}: {reference[0][3]}"
    )

    # The hint counts Mike; without timestamps the turns carry no times.
    script.batches.clear()
    plain = pipe(str(meeting_wav), speakers={"Mike": str(mike)}, num_speakers=4, linking_threshold=0.99)
    assert [t["speaker"] for t in plain["turns"]] == [t["speaker"] for t in turns]
    assert set(plain["turns"][0]) == {"speaker", "text"} and script.batches == batches(count, 4)


def batches(count: int, size: int) -> list[int]:
    return [size] * (count // size) + [count % size] * (count % size > 0)


def test_pipeline_runs_the_real_model_and_extractor_on_a_long_file(tiny, meeting, meeting_wav, monkeypatch):
    model, processor = tiny
    _, reference = meeting
    pipe = pipeline(TASK, model=model, processor=processor)
    count = len(segment_recording(meeting_wav).segments)
    calls = []
    original = model.generate

    def counting(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", counting)
    result = pipe(str(meeting_wav), max_new_tokens=4, return_timestamps=True)
    assert calls == batches(count, 4) and isinstance(result["turns"], list)

    # The model's own (random) speaker extractor links the reference turns; the hint sets the count.
    script = ScriptedGenerate(processor.tokenizer, segment_recording(meeting_wav).segments, reference)
    monkeypatch.setattr(model, "generate", script)
    turns = pipe(str(meeting_wav), return_timestamps=True, num_speakers=4)["turns"]
    assert len(speaker_map(turns, reference)) == 4

    # A clip over 10 s is embedded in equal pieces, whose embeddings are averaged.
    embed = model_embedder(model)
    long = soundfile.read(meeting_wav, dtype="float32")[0][: 25 * RATE]
    pieces = np.array_split(long, 3)
    vectors = embed([long, pieces[0]])
    assert vectors.shape == (2, model.config.speaker_config.embedding_size) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], embed(pieces).mean(0), atol=1e-5)


def test_silent_empty_and_broken_inputs(tiny, tmp_path):
    model, processor = tiny
    pipe = pipeline(TASK, model=model, processor=processor, max_new_tokens=4)
    for seconds, level in ((10.0, 0.0), (75.0, 0.0), (75.0, 1e-4)):
        noise = level * np.random.default_rng(0).standard_normal(int(seconds * RATE)).astype(np.float32)
        path = tmp_path / f"silent_{seconds}_{level}.wav"
        soundfile.write(path, noise, RATE)
        assert pipe(str(path)) == {"text": "", "turns": []}
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    no_frames = tmp_path / "no_frames.wav"
    soundfile.write(no_frames, np.zeros(0, dtype=np.float32), RATE)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 100)
    short = tmp_path / "short.wav"
    soundfile.write(short, 0.1 * np.ones(800, dtype=np.float32), RATE)
    voice = tmp_path / "voice.wav"
    soundfile.write(voice, 0.1 * np.sin(np.arange(3 * RATE) / 5).astype(np.float32), RATE)
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, 0.1 * np.sin(np.arange(RATE // 2) / 5).astype(np.float32), RATE)
    cases = [
        (str(empty), {}, ValueError, "is empty"),
        (str(no_frames), {}, ValueError, "is empty"),
        (str(garbage), {}, ValueError, "could not be decoded"),
        (str(short), {}, ValueError, "lasts 50 ms; a recording needs at least 100 ms"),
        (str(tmp_path / "missing.wav"), {}, FileNotFoundError, "does not exist"),
        (np.full(RATE, np.nan, dtype=np.float32), {}, ValueError, "NaN"),
        (str(voice), {"speakers": {"Mike": str(clip)}}, ValueError, "enrollment clip of 'Mike' lasts 0.50 s"),
        (str(voice), {"speakers": {"spk3": str(voice)}}, ValueError, "anonymous label"),
        (str(voice), {"num_speakers": 0}, ValueError, "num_speakers must be a positive integer"),
        (str(voice), {"min_speakers": 3, "max_speakers": 2}, ValueError, "min_speakers=3 is more than"),
        (str(voice), {"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        (str(voice), {"max_segment_duration": 700}, ValueError, "over the model's max_duration"),
    ]
    for audio, kwargs, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            pipe(audio, **kwargs)
    if shutil.which("ffmpeg") is None:
        with pytest.raises(ValueError, match="need the ffmpeg program"):
            open_audio(str(garbage))


TURNS = [
    {"speaker": "Mike Smith", "text": "fish & chips <cheap>", "start": 3725.25, "end": 3727.5},
    {"speaker": "spk0", "text": "second\nline  here", "start": 0.5, "end": 2.0},
    {"speaker": "spk1", "text": "", "start": 1.5, "end": 1.5},
]


def parse_cues(text: str, vtt: bool) -> list[tuple[float, float, str]]:
    """A small SRT / WebVTT reader: (start, end, text) of each cue."""
    clock = r"(\d+):(\d{2}):(\d{2})[,.](\d{3})"
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    if vtt:
        assert blocks.pop(0) == "WEBVTT"
    cues = []
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if not vtt:
            assert lines.pop(0) == str(number)
        match = re.fullmatch(f"{clock} --> {clock}", lines[0])
        assert match, lines[0]
        h1, m1, s1, f1, h2, m2, s2, f2 = map(int, match.groups())
        cues.append(
            (h1 * 3600 + m1 * 60 + s1 + f1 / 1000, h2 * 3600 + m2 * 60 + s2 + f2 / 1000, "\n".join(lines[1:]))
        )
    return cues


def test_every_writer_parses_back(tmp_path):
    from meeteval.io import RTTM, SegLST

    srt = parse_cues(format_srt(TURNS), vtt=False)
    assert srt == [
        (0.5, 2.0, "spk0: second line here"),
        (1.5, 1.5, "spk1: "),
        (3725.25, 3727.5, "Mike Smith: fish & chips <cheap>"),
    ]
    vtt = parse_cues(format_vtt(TURNS), vtt=True)
    assert [c[:2] for c in vtt] == [c[:2] for c in srt]
    assert vtt[2][2] == "<v Mike Smith>fish &amp; chips &lt;cheap&gt;"

    paths = {name: write_transcript(TURNS, tmp_path / f"rec{EXTENSIONS[name]}", name) for name in FORMATS}
    rttm_lines = paths["rttm"].read_text().splitlines()
    assert [len(line.split()) for line in rttm_lines] == [10, 10, 10]
    assert rttm_lines[2] == "SPEAKER rec 1 3725.250 2.250 <NA> <NA> Mike_Smith <NA> <NA>"
    assert [line.speaker_id for line in RTTM.load(paths["rttm"])] == ["spk0", "spk1", "Mike_Smith"]
    stm_lines = paths["stm"].read_text().splitlines()
    assert all(len(line.split()) >= 6 and line.split()[5] == "<o,f0,unknown>" for line in stm_lines)
    stm = read_stm(paths["stm"])["rec"]
    assert [(t.speaker, t.text, t.start) for t in stm] == [
        ("spk0", "second line here", 0.5),
        ("spk1", "", 1.5),
        ("Mike_Smith", "fish & chips <cheap>", 3725.25),
    ]
    assert format_stm(TURNS, "rec", label=None).splitlines()[1] == "rec 1 spk1 1.500 1.500"
    seglst = SegLST.load(paths["seglst"])
    assert [(s["session_id"], s["speaker"], s["start_time"], s["end_time"], s["words"]) for s in seglst] == [
        ("rec", "spk0", 0.5, 2.0, "second line here"),
        ("rec", "spk1", 1.5, 1.5, ""),
        ("rec", "Mike Smith", 3725.25, 3727.5, "fish & chips <cheap>"),
    ]
    assert json.loads(paths["json"].read_text()) == TURNS
    assert [(t.speaker, t.start, t.end) for t in read_json(paths["json"])["rec"]] == [
        (t["speaker"], t["start"], t["end"]) for t in TURNS
    ]
    txt = read_role_transcript(paths["txt"])["rec"]
    assert [(t.speaker, t.text, t.start) for t in txt] == [
        ("Mike Smith", "fish & chips <cheap>", 3725.25),
        ("spk0", "second line here", 0.5),
        ("spk1", "", 1.5),
    ]
    assert format_txt([{"speaker": "spk0", "text": "hi"}]) == "spk0: hi\n"
    with pytest.raises(ValueError, match="the rttm format needs turn times"):
        format_rttm([{"speaker": "spk0", "text": "hi"}], "rec")
    assert parse_formats("srt, vtt") == ["srt", "vtt"] and parse_formats(["all"]) == list(FORMATS)
    with pytest.raises(ValueError, match="unknown output format 'docx'"):
        parse_formats("srt,docx")


def test_cli_transcribes_files_into_every_format(tiny, meeting, meeting_wav, tmp_path, monkeypatch, capsys):
    from meeteval.io import SegLST

    model, processor = tiny
    audio, reference = meeting
    folder = hub.export_model(model, processor, tmp_path / "SpeakerLM-Tiny")
    plan = segment_recording(meeting_wav)
    script = ScriptedGenerate(processor.tokenizer, plan.segments, reference)
    monkeypatch.setattr(
        SpeakerLMForConditionalGeneration, "generate", lambda self, **kwargs: script(**kwargs)
    )
    monkeypatch.setattr(pipeline_speakerlm, "model_embedder", lambda _: spectral_embedder(audio))
    silent = tmp_path / "silence.wav"
    soundfile.write(silent, np.zeros(RATE * 5, dtype=np.float32), RATE)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio" * 50)
    out = tmp_path / "out"
    code = cli.main(
        ["transcribe", str(meeting_wav), str(broken), str(silent), "--model", str(folder), "--format", "all",
         "--output-dir", str(out), "--num-speakers", "4", "--quiet"]
    )  # fmt: skip
    assert code == 1
    assert "broken.wav' could not be decoded" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{EXTENSIONS[name]}" for stem in ("meeting", "silence") for name in FORMATS
    )
    segments = SegLST.load(out / "meeting.seglst.json")
    assert len(segments) == len(reference) and {s["speaker"] for s in segments} == {
        "spk0",
        "spk1",
        "spk2",
        "spk3",
    }
    assert len((out / "meeting.rttm").read_text().splitlines()) == len(reference)
    assert len(parse_cues((out / "meeting.srt").read_text(), vtt=False)) == len(reference)
    assert (out / "silence.srt").read_text() == "" and json.loads((out / "silence.json").read_text()) == []

    monkeypatch.setattr("speakerlm_hf.transcribe.DEFAULT_MODEL", tmp_path / "no_default_model")
    assert cli.main(["transcribe", str(meeting_wav), "--output-dir", str(out)]) == 1
    assert "the default model is not installed" in capsys.readouterr().err
    assert cli.main(["transcribe", str(meeting_wav), "--model", str(folder), "--speaker", "Mike"]) == 1
    assert "is not NAME=CLIP" in capsys.readouterr().err
    # joint CTC decoding needs a model whose audio tokens were trained to spell transcripts
    args = ["transcribe", str(meeting_wav), "--model", str(folder), "--output-dir", str(out), "--quiet"]
    assert cli.main([*args, "--ctc-weight", "0.5"]) == 1
    assert "config.audio_ctc is false" in capsys.readouterr().err
