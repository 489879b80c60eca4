"""Stage-2 simulation: speaker counts, lengths, exact turn times, noise/reverb, seeded determinism."""

import shutil

import numpy as np
import pytest
import torch

from speakerlm_hf.data.simulation import (
    ConversationSimulator,
    SimulationConfig,
    coloured_noise,
    fft_convolve,
    simulate_conversations,
    synthetic_rir,
)
from speakerlm_hf.data.toy_corpus import toy_utterances

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")
RATE = 16000


@pytest.fixture(scope="module")
def source():
    rows = toy_utterances(num_speakers=6, per_speaker=6, seed=0)
    for i, row in enumerate(rows):
        row["text"] = f"utterance {i}"  # one text per source row, to find a turn's audio
    return rows


def sample(source, config, seed=0, shard=0, index=0, **options):
    simulator = ConversationSimulator(source, config, seed, **options)
    return simulator.simulate(np.random.default_rng([seed, shard, index]))


def covered(turns, total):
    mask = np.zeros(total, dtype=int)
    for t in turns:
        mask[round(t["start"] * RATE) : round(t["end"] * RATE)] += 1
    return mask


@pytest.mark.parametrize("speakers", [2, 3, 4])
def test_speaker_counts_lengths_and_exact_turn_times(source, speakers):
    config = SimulationConfig(
        min_speakers=speakers, max_speakers=speakers, duration=50.0, overlap_probability=0.3
    )
    by_text = {row["text"]: row for row in source}
    checked = 0
    for index in range(4):
        example = sample(source, config, index=index)
        mixture, turns = example["audio"]["array"], example["turns"]
        assert mixture.shape == (50 * RATE,) and example["audio"]["sampling_rate"] == RATE
        assert len({t["speaker"] for t in turns}) == speakers
        assert [t["start"] for t in turns] == sorted(t["start"] for t in turns)
        assert turns[-1]["end"] <= 50.0 and turns[0]["start"] >= 0.0
        mask = covered(turns, mixture.size)
        assert not mixture[mask == 0].any(), "silence between turns is exactly zero"
        for turn in turns:
            row = by_text[turn["text"]]
            assert row["speaker"] == turn["speaker"]
            utterance = row["audio"]["array"]
            start = turn["start"] * RATE
            # Times are sample positions / rate: exact to the sample (up to float rounding of the division).
            assert (
                abs(start - round(start)) < 1e-6 and abs(turn["end"] * RATE - (start + utterance.size)) < 1e-6
            )
            span = slice(round(start), round(start) + utterance.size)
            alone = (mask[span] == 1) & (utterance != 0)
            if alone.sum() < RATE // 10:
                continue  # overlapped at both ends nearly whole
            checked += 1
            piece, reference = mixture[span][alone], utterance[alone]
            gain = float(piece @ reference / (reference @ reference))
            assert gain > 0
            np.testing.assert_allclose(piece, gain * reference, atol=2e-6)
        for entry in example["enrollment"]:
            for clip in entry["clips"]:
                assert 2.0 <= clip["array"].size / RATE <= 10.0
                used = {t["text"] for t in turns}
                owners = [
                    r
                    for r in source
                    if r["speaker"] == entry["speaker"]
                    and r["text"] not in used
                    and _contains(r["audio"]["array"], clip["array"])
                ]
                assert owners, "an enrollment clip is (a crop of) an unused utterance of that speaker"
    assert checked >= 10


def _contains(whole: np.ndarray, part: np.ndarray) -> bool:
    """Whether `part` is a contiguous piece of `whole` (found through its loudest sample)."""
    k = int(np.argmax(np.abs(part)))
    for offset in np.flatnonzero(whole == part[k]) - k:
        if 0 <= offset <= whole.size - part.size and np.array_equal(whole[offset : offset + part.size], part):
            return True
    return False


def test_gaps_and_overlaps_follow_the_config(source):
    apart = SimulationConfig(overlap_probability=0.0, continue_probability=0.0, gap_range=(0.3, 0.6))
    for index in range(3):
        turns = sample(source, apart, index=index)["turns"]
        for previous, turn in zip(turns, turns[1:], strict=False):
            assert 0.3 - 1e-9 <= turn["start"] - previous["end"] <= 0.6 + 1e-9
    together = SimulationConfig(overlap_probability=1.0, continue_probability=0.0, overlap_range=(0.5, 1.0))
    turns = sample(source, together)["turns"]
    overlaps = [previous["end"] - turn["start"] for previous, turn in zip(turns, turns[1:], strict=False)]
    assert all(0.0 < o <= 1.0 + 1e-9 for o in overlaps), overlaps
    for previous, turn in zip(turns, turns[1:], strict=False):
        assert turn["end"] > previous["end"], "no utterance lies inside another"
    by_speaker = {}
    for turn in turns:
        assert turn["start"] >= by_speaker.get(turn["speaker"], 0.0), "a speaker never overlaps themself"
        by_speaker[turn["speaker"]] = turn["end"]


def test_speakers_continue_after_a_pause(source):
    def continuations(config):
        found = []
        for index in range(4):
            turns = sample(source, config, index=index)["turns"]
            found += [
                turn["start"] - previous["end"]
                for previous, turn in zip(turns, turns[1:], strict=False)
                if turn["speaker"] == previous["speaker"]
            ]
        return found

    never = continuations(SimulationConfig(continue_probability=0.0))
    assert never == []
    pauses = continuations(SimulationConfig(continue_probability=0.5, continue_gap_range=(0.4, 0.9)))
    assert len(pauses) >= 3, "AAB / ABB patterns must occur"
    assert all(0.4 - 1e-9 <= p <= 0.9 + 1e-9 for p in pauses), pauses


def test_requested_duration_and_too_long_utterances(source):
    example = sample(source, SimulationConfig(duration=30.0, max_speakers=3))
    assert example["audio"]["array"].size == 30 * RATE and example["turns"][-1]["end"] <= 30.0
    with pytest.raises(ValueError, match="could not fit"):
        sample(source, SimulationConfig(duration=4.0, min_speakers=4, max_speakers=4))
    with pytest.raises(ValueError, match="has 1 speaker"):
        ConversationSimulator(source[:6], SimulationConfig(max_speakers=4))


def test_drawn_lengths_stay_in_range_and_too_short_ones_are_redrawn(source):
    """With min_duration, lengths are drawn per session; 3 speakers never fail on a 3 s draw."""
    config = SimulationConfig(duration=30.0, min_duration=3.0, min_speakers=3, max_speakers=3)
    simulator = ConversationSimulator(source, config, 0)
    lengths = []
    for index in range(12):
        example = simulator.simulate(np.random.default_rng([0, index]))
        lengths.append(example["audio"]["array"].size / RATE)
        assert len({t["speaker"] for t in example["turns"]}) == 3
    assert all(3.0 <= length <= 30.0 for length in lengths) and len(set(lengths)) > 1
    with pytest.raises(ValueError, match="min_duration"):
        SimulationConfig(duration=10.0, min_duration=20.0)


def test_noise_at_the_requested_snr(source):
    quiet = dict(level_range=(-40.0, -35.0), snr_range=(10.0, 10.0))
    clean = sample(source, SimulationConfig(noise_probability=0.0, **quiet), index=2)
    noisy = sample(source, SimulationConfig(noise_probability=1.0, **quiet), index=2)
    assert clean["turns"] == noisy["turns"]
    speech, noise = clean["audio"]["array"], noisy["audio"]["array"] - clean["audio"]["array"]
    active = covered(clean["turns"], speech.size) > 0
    snr = 10 * np.log10(
        np.mean(speech[active].astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)
    )
    assert snr == pytest.approx(10.0, abs=0.01)


def test_reverberation_keeps_turn_onsets(source):
    rir = np.zeros(4000, dtype=np.float32)
    rir[200] = 0.5  # a measured response starts after some delay: aligned on its peak
    rir[201:] = 0.05 * np.exp(-np.arange(3799) / 800.0) * np.random.default_rng(0).standard_normal(3799)
    config = SimulationConfig(reverb_probability=1.0, overlap_probability=0.0)
    for rirs in (None, [rir]):
        example = sample(source, config, index=1, rirs=rirs)
        mixture, turns = example["audio"]["array"], example["turns"]
        first = round(turns[0]["start"] * RATE)
        assert not mixture[:first].any() and mixture[first : first + 800].any()
        tail = round(turns[0]["end"] * RATE)
        assert mixture[tail : tail + 200].any(), "the reverberant tail rings on after the turn"


def test_acoustic_helpers():
    rng = np.random.default_rng(0)
    signal, kernel = rng.standard_normal(1000), rng.standard_normal(77)
    np.testing.assert_allclose(fft_convolve(signal, kernel), np.convolve(signal, kernel), atol=1e-4)
    rir = synthetic_rir(rng, rt60=0.4, drr_db=6.0)
    assert rir[0] == 1.0 and rir.size == round(0.4 * RATE)
    assert 10 * np.log10(np.sum(rir[1:] ** 2)) == pytest.approx(-6.0, abs=1e-3)
    energy = np.cumsum(rir[1:][::-1] ** 2)[::-1]  # Schroeder decay
    decay = 10 * np.log10(energy[int(0.2 * RATE)] / energy[0])
    assert decay == pytest.approx(-30.0, abs=3.0)
    pink = coloured_noise(rng, 2**16, 1.0)
    assert np.sqrt(np.mean(pink**2)) == pytest.approx(1.0, rel=1e-5)
    power = np.abs(np.fft.rfft(pink)) ** 2
    low, high = power[100:200].mean(), power[1000:2000].mean()
    assert 10 * np.log10(low / high) == pytest.approx(10.0, abs=1.5)  # -10 dB per decade


def test_same_seed_same_stream_also_through_two_workers(source):
    config = SimulationConfig(noise_probability=0.5, reverb_probability=0.5)
    simulator = ConversationSimulator(source, config, seed=7)
    first = simulator.simulate(np.random.default_rng([7, 1, 0]))
    again = ConversationSimulator(source, config, seed=7).simulate(np.random.default_rng([7, 1, 0]))
    np.testing.assert_array_equal(first["audio"]["array"], again["audio"]["array"])
    assert first["turns"] == again["turns"]
    other = ConversationSimulator(source, config, seed=8).simulate(np.random.default_rng([8, 1, 0]))
    assert other["turns"] != first["turns"]

    dataset = simulate_conversations(source, config, seed=7, num_shards=4)

    def stream():
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == 3:
                return batches

    once, twice = stream(), stream()
    ids = [[x["id"] for x in batch] for batch in once]
    # Worker w works on shard w: batches alternate between the workers' shards.
    assert ids == [["sim-7-0-0", "sim-7-0-1"], ["sim-7-1-0", "sim-7-1-1"], ["sim-7-0-2", "sim-7-0-3"]]
    for a, b in zip(once, twice, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["audio"]["array"], y["audio"]["array"])
            assert x["turns"] == y["turns"]
    np.testing.assert_array_equal(once[1][0]["audio"]["array"], first["audio"]["array"])
