"""The cascade baselines (SD+ASR, SD+ASR+LLM) and `benchmarks/sdr_compare.py`, on a 40 s espeak-ng
recording of three voices."""

import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from scipy.fft import dct
from test_longform import speak
from transformers import Qwen2ForCausalLM, pipeline

from benchmarks import sdr_compare
from speakerlm_hf import hub
from speakerlm_hf.audio_frontend import kaldi_fbank
from speakerlm_hf.cascade import (
    CORRECTION_PROMPT,
    CascadeConfig,
    CascadeSDR,
    correct_with_llm,
    correction_messages,
    funasr_embedder,
    funasr_transcriber,
    parse_correction,
    speakerlm_transcriber,
)
from speakerlm_hf.data import write_parquet_shards
from speakerlm_hf.data.audio import encode_flac
from speakerlm_hf.data.toy_corpus import TOY_SENTENCES
from speakerlm_hf.pipeline_speakerlm import TASK
from speakerlm_hf.testing_utils import tiny_speakerlm, tiny_text_config, tiny_tokenizer

RATE = 16000
VOICES = {"A": ("en+m3", 150), "B": ("en+f2", 175), "C": ("en+m7", 140)}
# (speaker, sentence, pause after in seconds): two changes of speaker after only 0.15 s, which the
# VAD keeps in one region, so the windows have to find them.
SCRIPT = (
    ("A", 0, 0.9), ("B", 1, 0.8), ("C", 2, 1.0), ("A", 3, 0.15), ("B", 4, 1.2), ("C", 5, 0.7),
    ("B", 0, 0.9), ("A", 2, 1.0), ("C", 1, 0.15), ("A", 4, 0.6),
)  # fmt: skip
SPEC_PROMPT = (
    "You are a helpful assistant. In the speaker diarization transcript below, some words are potentially "
    "misplaced. Please correct those words and move them to the right speaker. Directly show the corrected "
    "transcript without explaining what changes were made or why you made those changes."
)

# 2 s windows: the test's cepstral embedding needs more speech than a trained extractor does.
CONFIG = CascadeConfig(window=2.0, hop=1.0, threshold=0.2)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


def cepstral_embedder(recording: np.ndarray):
    """A deterministic voice embedding for the test: the mean cepstrum (coefficients 1-19 of the
    40-bin log-mel) of a clip's louder frames minus the recording's. The tiny random model's speaker
    extractor does not separate voices."""

    def cepstrum(clip: np.ndarray) -> np.ndarray:
        fbank = kaldi_fbank(clip, num_mel_bins=40).numpy()
        loud = fbank.mean(1) > np.percentile(fbank.mean(1), 40)
        return dct(fbank[loud], type=2, norm="ortho", axis=1)[:, 1:20].mean(0)

    mean = cepstrum(recording)
    return lambda clips: np.stack([cepstrum(clip) - mean for clip in clips])


@pytest.fixture(scope="module")
def recording():
    """(waveform, reference turns, enrollment clips by speaker) of a ~40 s three-voice recording."""
    pieces, reference, cursor = [np.zeros(int(0.5 * RATE), np.float32)], [], 0.5
    for speaker, sentence, pause in SCRIPT:
        clip = speak(TOY_SENTENCES[sentence], *VOICES[speaker])
        reference.append(
            {
                "speaker": speaker,
                "start": cursor,
                "end": cursor + clip.size / RATE,
                "text": TOY_SENTENCES[sentence],
            }
        )
        pieces += [clip, np.zeros(int(pause * RATE), np.float32)]
        cursor += clip.size / RATE + int(pause * RATE) / RATE
    enrollment = {s: [speak(TOY_SENTENCES[k], *VOICES[s]) for k in (6, 7)] for s in VOICES}
    return np.concatenate(pieces), reference, enrollment


def test_diarization_finds_three_voices_and_turn_boundaries(recording):
    audio, reference, _ = recording
    assert 38 < audio.size / RATE < 46
    turns, waveform = CascadeSDR(cepstral_embedder(audio), config=CONFIG).diarize(audio)
    np.testing.assert_array_equal(waveform, audio)
    assert len(turns) == len(reference)
    assert [t["speaker"] for t in turns[:3]] == ["spk0", "spk1", "spk2"]
    mapping = {r["speaker"]: t["speaker"] for r, t in zip(reference, turns, strict=True)}
    assert len(set(mapping.values())) == 3
    assert [t["speaker"] for t in turns] == [mapping[r["speaker"]] for r in reference]
    starts = np.array([t["start"] - r["start"] for r, t in zip(reference, turns, strict=True)])
    ends = np.array([t["end"] - r["end"] for r, t in zip(reference, turns, strict=True)])
    # The VAD widens speech by 0.1 s before and 0.2 s after; a change inside one region is found
    # to within half a window hop.
    assert np.abs(starts).max() < 0.45 and np.abs(ends).max() < 0.45
    assert np.median(np.abs(starts)) < 0.15 and np.median(np.abs(ends)) < 0.25


def test_count_hints_bound_the_number_of_speakers(recording):
    audio, _, _ = recording
    cascade = CascadeSDR(cepstral_embedder(audio), config=CONFIG)

    def count(**hints):
        return len({t["speaker"] for t in cascade.diarize(audio, **hints)[0]})

    assert count(num_speakers=2) == 2
    assert count(max_speakers=2) == 2
    assert count(min_speakers=4) == 4
    assert count(num_speakers=3) == 3
    strict = CascadeSDR(cepstral_embedder(audio), config=CascadeConfig(window=2.0, hop=1.0, threshold=0.9))
    assert len({t["speaker"] for t in strict.diarize(audio)[0]}) > 3
    with pytest.raises(ValueError, match="num_speakers must be a positive integer"):
        cascade.diarize(audio, num_speakers=0)
    with pytest.raises(ValueError, match="min_speakers=3 is more than max_speakers=2"):
        cascade.diarize(audio, min_speakers=3, max_speakers=2)


def test_registered_speakers_name_their_clusters(recording):
    audio, reference, enrollment = recording
    embed = cepstral_embedder(audio)
    cascade = CascadeSDR(embed, config=CONFIG)
    names = {"Mike": enrollment["A"], "Lucy": enrollment["B"], "Jack": enrollment["C"]}
    turns, _ = cascade.diarize(audio, speakers=names)
    expected = {"A": "Mike", "B": "Lucy", "C": "Jack"}
    assert [t["speaker"] for t in turns] == [expected[r["speaker"]] for r in reference]
    # Two registered (one as a precomputed embedding): the third voice stays anonymous.
    vector = embed(enrollment["B"]).mean(0)
    turns, _ = cascade.diarize(audio, speakers={"Mike": enrollment["A"][0], "Lucy": {"embedding": vector}})
    expected = {"A": "Mike", "B": "Lucy", "C": "spk0"}
    assert [t["speaker"] for t in turns] == [expected[r["speaker"]] for r in reference]
    with pytest.raises(ValueError, match="anonymous label"):
        cascade.diarize(audio, speakers={"spk3": enrollment["A"]})


def test_asr_runs_the_speakerlm_pipeline_on_every_turn(recording):
    audio, reference, _ = recording
    model, processor = tiny_speakerlm()
    hub.register_auto_classes()
    pipe = pipeline(TASK, model=model, processor=processor)
    # The random model only says newlines, which strip to nothing; without them it says something.
    options = {
        "max_new_tokens": 3,
        "suppress_tokens": processor.tokenizer("\n", add_special_tokens=False)["input_ids"],
    }
    calls = []

    def spy(inputs, **kwargs):
        calls.append((inputs, kwargs))
        return pipe(inputs, **kwargs)

    cascade = CascadeSDR(cepstral_embedder(audio), speakerlm_transcriber(spy, **options), CONFIG)
    result = cascade(audio)
    turns, _ = cascade.diarize(audio)
    [(inputs, kwargs)] = calls
    assert kwargs == {"task": "asr", **options}
    assert len(inputs) == len(turns) == len(reference)
    for clip, turn in zip(inputs, turns, strict=True):
        assert clip["sampling_rate"] == RATE
        np.testing.assert_array_equal(
            clip["raw"], audio[int(turn["start"] * RATE) : int(np.ceil(turn["end"] * RATE))]
        )
    texts = [pipe(clip, task="asr", **options)["text"].strip() for clip in inputs]
    assert all(texts)
    expected = [{**t, "text": x} for t, x in zip(turns, texts, strict=True)]
    assert result["turns"] == [{k: t[k] for k in ("speaker", "text", "start", "end")} for t in expected]
    assert result["text"] == "\n".join(f"{t['speaker']}: {t['text']}" for t in expected)


class FakeAutoModel:
    """Stands for funasr's AutoModel: records how it was built and answers like SenseVoice or CAM++."""

    built = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        FakeAutoModel.built.append(kwargs)

    def generate(self, input, **kwargs):
        if "campplus" in self.kwargs["model"]:
            return [{"spk_embedding": torch.tensor([[float(input.size), 1.0, 0.0]])}]
        return [{"key": "x", "text": f"<|en|><|NEUTRAL|><|Speech|><|woitn|>words of {input.size} samples"}]


def test_funasr_glue(monkeypatch):
    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=FakeAutoModel))
    FakeAutoModel.built.clear()
    transcribe = funasr_transcriber("models/SenseVoiceSmall")
    embed = funasr_embedder("models/campplus", device="cpu")
    clips = [np.zeros(1600, np.float32), np.zeros(800, np.float32)]
    assert transcribe(clips) == ["words of 1600 samples", "words of 800 samples"]
    np.testing.assert_array_equal(embed(clips), [[1600.0, 1.0, 0.0], [800.0, 1.0, 0.0]])
    assert FakeAutoModel.built == [
        {"model": "models/SenseVoiceSmall", "device": "cpu", "disable_update": True},
        {"model": "models/campplus", "device": "cpu", "disable_update": True},
    ]


def test_correction_prompt_is_the_spec_prompt_and_falls_back():
    assert CORRECTION_PROMPT == SPEC_PROMPT
    turns = [
        {"speaker": "spk0", "text": "good morning everyone let us", "start": 0.5, "end": 2.0},
        {"speaker": "spk1", "text": "start the weekly meeting", "start": 2.1, "end": 3.0},
    ]
    transcript = "spk0: good morning everyone let us\nspk1: start the weekly meeting"
    assert correction_messages(transcript) == [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": SPEC_PROMPT[len("You are a helpful assistant. ") :] + "\n\n" + transcript,
        },
    ]
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    llm = Qwen2ForCausalLM(tiny_text_config(tokenizer)).eval()
    prompts = []
    generate = llm.generate

    def spy(**kwargs):
        prompts.append(tokenizer.decode(kwargs["input_ids"][0]))
        return generate(**kwargs)

    llm.generate = spy
    result, corrected = correct_with_llm(turns, llm, tokenizer, max_new_tokens=12)
    assert prompts == [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + SPEC_PROMPT[len("You are a helpful assistant. ") :]
        + "\n\n"
        + transcript
        + "<|im_end|>\n<|im_start|>assistant\n"
    ]
    # A random LLM's answer is no correction: the cascade's turns come back unchanged.
    assert (result, corrected) == (turns, False)

    answer = "spk0: good morning everyone\nspk1: let us start the weekly meeting"
    answer_ids = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    llm.generate = lambda **kwargs: torch.cat([kwargs["input_ids"], answer_ids], dim=1)
    assert correct_with_llm(turns, llm, tokenizer) == (
        [
            {"speaker": "spk0", "text": "good morning everyone"},
            {"speaker": "spk1", "text": "let us start the weekly meeting"},
        ],
        True,
    )
    assert parse_correction("spk2: good morning everyone let us start the weekly meeting", turns) is None
    assert parse_correction("here it is\nspk0: good", turns) is None
    assert parse_correction("spk0: good morning", turns) is None  # most of the text is gone


def test_sdr_compare_runs_end_to_end(recording, tmp_path, capsys):
    audio, reference, enrollment = recording
    rows = []
    for number, (first, last) in enumerate(((0, 4), (6, 9))):
        start, end = reference[first]["start"] - 0.3, reference[last]["end"] + 0.3
        turns = [
            {**t, "start": t["start"] - start, "end": t["end"] - start} for t in reference[first : last + 1]
        ]
        rows.append(
            {
                "id": f"toy-{number}",
                "corpus": "toy",
                "session": f"toy-{number}",
                "start": start,
                "end": end,
                "audio": {
                    "bytes": encode_flac(audio[int(start * RATE) : int(end * RATE)]),
                    "path": f"toy-{number}.flac",
                },
                "turns": turns,
                "enrollment": [
                    {
                        "speaker": s,
                        "clips": [
                            {"bytes": encode_flac(c), "start": 0.0, "end": c.size / RATE}
                            for c in enrollment[s]
                        ],
                    }
                    for s in dict.fromkeys(t["speaker"] for t in turns)
                ],
            }
        )
    write_parquet_shards(rows, tmp_path / "prepared", "test")
    model, processor = tiny_speakerlm()
    exported = hub.export_model(model, processor, tmp_path / "model")
    output = tmp_path / "compare.json"
    code = sdr_compare.main(
        ["--data", str(tmp_path / "prepared"), "--model", str(exported), "--limit", "2",
         "--max-new-tokens", "3", "--output", str(output)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| System | CER | cpCER | Δcp | saCER | Δsa | RTF |" in printed
    for system in ("SD+ASR", "SD+ASR+LLM", "SpeakerLM"):
        assert any(line.startswith(f"| {system} |") and line.count("|") == 8 for line in printed.splitlines())
    report = json.loads(output.read_text())
    assert report["examples"] == 2
    assert set(report["results"]) == {"SD+ASR", "SD+ASR+LLM", "SpeakerLM"}
    for result in report["results"].values():
        # A random tiny model says next to nothing: every reference character is an error.
        assert result["cer"] >= 0.9 and result["cp"] >= result["cer"] - 1e-9
        assert result["rtf"] > 0
