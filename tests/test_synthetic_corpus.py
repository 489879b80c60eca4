"""The synthetic espeak-ng corpus: voices, sentences, utterances and conversation scripts."""

from __future__ import annotations

import shutil
from itertools import pairwise

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)

from training.synthetic.conversation import (  # noqa: E402
    ConversationScript,
    TurnTaking,
    conversation_script,
    render_conversation,
)
from training.synthetic.grammar import (  # noqa: E402
    MAX_WORDS,
    MIN_WORDS,
    Grammar,
    fix_articles,
    is_normalized,
    normalize_text,
    number_to_words,
    ordinal_to_words,
    parse_template,
    plural_of,
    sentence_split,
    verb_forms,
)
from training.synthetic.synthesis import SAMPLE_RATE, synthesize  # noqa: E402
from training.synthetic.voices import (  # noqa: E402
    EXCLUDED_VARIANTS,
    RANDOM_VARIANT_PREFIX,
    Speaker,
    english_voices,
    espeak_data,
    espeak_path,
    make_random_speakers,
    make_speakers,
    variants,
    voice_combinations,
)


@pytest.fixture(scope="module")
def grammar() -> Grammar:
    return Grammar()


@pytest.fixture(scope="module")
def train_speakers():
    return make_speakers(60, "train", seed=0)


def test_voice_space_has_disjoint_train_and_test_combinations():
    voices, names = english_voices(), variants()
    assert {"en-us", "en-gb", "en-gb-scotland"} <= set(voices)
    assert len(names) >= 50 and names[0] == "default"
    assert not set(EXCLUDED_VARIANTS) & set(names)
    train, test = voice_combinations("train"), voice_combinations("test")
    assert len(train) + len(test) == len(voices) * len(names)
    assert len(test) >= 50 and len(train) >= 5 * len(test)
    assert not set(train) & set(test)
    # Some variants are never heard in training at all.
    assert {w for _, w in test} - {w for _, w in train}


def test_speakers_are_deterministic_and_use_split_combinations():
    train = make_speakers(600, "train", seed=0)
    test = make_speakers(100, "test", seed=0)
    assert train == make_speakers(600, "train", seed=0)
    assert train[:5] != make_speakers(5, "train", seed=1)
    assert len({s.id for s in train + test}) == 700
    assert {s.combination for s in train} <= set(voice_combinations("train"))
    assert not {s.combination for s in train} & {s.combination for s in test}
    # Combinations are dealt evenly: 600 speakers over 653 train combinations are all distinct.
    assert len({s.combination for s in train}) == 600
    pitches = np.array([s.pitch for s in train])
    assert pitches.min() >= 20 and pitches.max() <= 80 and pitches.std() > 10
    assert all(130 <= s.rate <= 190 and 0.93 <= s.speed <= 1.07 for s in train)


def test_text_helpers():
    assert number_to_words(0) == "zero"
    assert number_to_words(105) == "one hundred and five"
    assert number_to_words(2024) == "two thousand and twenty four"
    assert number_to_words(45_310) == "forty five thousand three hundred and ten"
    assert ordinal_to_words(21) == "twenty first" and ordinal_to_words(30) == "thirtieth"
    assert [plural_of(w) for w in ("budget", "box", "policy", "day")] == [
        "budgets",
        "boxes",
        "policies",
        "days",
    ]
    assert verb_forms("update") == ("update", "updated", "updated", "updating", "updates")
    assert verb_forms("carry") == ("carry", "carried", "carried", "carrying", "carries")
    assert verb_forms("plan", "planned", "planned", "planning")[3:] == ("planning", "plans")
    assert (
        fix_articles("a update to a user and an budget".split()) == "an update to a user and a budget".split()
    )
    assert normalize_text("Let's meet at 3, OK?") == "let's meet at ok"
    with pytest.raises(ValueError, match="missing"):
        parse_template("we (need|want to {vw} the {obj}")


def test_vocabulary_is_closed_and_large(grammar):
    assert len(grammar.vocabulary) >= 2000
    # No word is test-only: the train templates reach the whole vocabulary.
    assert grammar.train_vocabulary == grammar.vocabulary
    rng = np.random.default_rng(0)
    sentences = grammar.sample_unique(rng, 3000, "train")
    words = [w for s in sentences for w in s.text.split()]
    assert set(words) <= grammar.vocabulary
    assert len(set(words)) > 1500
    assert all(is_normalized(s.text) and MIN_WORDS <= s.num_words <= MAX_WORDS for s in sentences)
    assert 6 < np.mean([s.num_words for s in sentences]) < 11


def test_test_sentences_never_appear_in_train(grammar):
    rng = np.random.default_rng(1)
    train = grammar.sample_unique(rng, 6000, "train")
    test = grammar.sample_unique(rng, 2000, "test")
    assert not {s.text for s in train} & {s.text for s in test}
    assert all(sentence_split(s.text) == "train" for s in train)
    assert all(sentence_split(s.text) == "test" for s in test)
    held_out = {t.index for t in grammar.templates if t.held_out}
    assert not any(s.template in held_out for s in train)
    share = np.mean([s.template in held_out for s in test])
    assert 0.2 < share < 0.4
    # Sentences are a function of the seed.
    again = grammar.sample_unique(np.random.default_rng(1), 6000, "train")
    assert [s.text for s in again] == [s.text for s in train]


def test_synthesis_is_tight_levelled_and_deterministic(grammar, train_speakers):
    rng = np.random.default_rng(2)
    sentences = grammar.sample_unique(rng, 12, "train")
    for sentence, speaker in zip(sentences, train_speakers, strict=False):
        audio = synthesize(sentence.spoken, speaker)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert 0.6 < len(audio) / SAMPLE_RATE < 10
        # Stored as 16-bit values exactly.
        np.testing.assert_array_equal(audio * 32768, np.round(audio * 32768))
        # Level of the louder half of 20 ms frames equals the speaker's level.
        frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
        energy = np.sort((frames.astype(np.float64) ** 2).mean(axis=1))
        level = 10 * np.log10(energy[len(energy) // 2 :].mean())
        assert abs(level - speaker.level_db) < 0.1 or np.abs(audio).max() > 0.97
        # Tight boundaries: speech within 20 ms of both ends.
        peak_energy = energy[-1]
        assert (frames[:4].astype(np.float64) ** 2).mean(axis=1).max() > peak_energy * 1e-5
        assert (frames[-4:].astype(np.float64) ** 2).mean(axis=1).max() > peak_energy * 1e-5
    np.testing.assert_array_equal(
        synthesize(sentences[0].spoken, train_speakers[0]), synthesize(sentences[0].spoken, train_speakers[0])
    )
    # The timbre chain changes the sound of the same voice combination.
    other = train_speakers[0].__class__(**{**train_speakers[0].to_dict(), "speed": 1.0, "eq_gain_db": 0.0})
    assert not np.array_equal(
        synthesize(sentences[0].spoken, other), synthesize(sentences[0].spoken, train_speakers[0])
    )


def test_generated_voice_variants_are_what_espeak_speaks(grammar, train_speakers):
    speakers = make_random_speakers(6, "train", seed=3)
    assert speakers == make_random_speakers(6, "train", seed=3)
    assert [s.id for s in speakers] == [f"train-r3-{i:04d}" for i in range(6)]
    assert len({s.variant for s in speakers}) == 6
    assert all(
        s.variant.startswith(RANDOM_VARIANT_PREFIX) and f"name {s.variant}\n" in s.variant_spec
        for s in speakers
    )
    assert {s.voice for s in speakers} <= set(english_voices())
    # A speaker written to speakers.json and read back keeps its variant; older files without
    # the field read as stock variants.
    assert Speaker.from_dict(speakers[0].to_dict()) == speakers[0]
    old = {k: v for k, v in train_speakers[0].to_dict().items() if k != "variant_spec"}
    assert Speaker.from_dict(old) == train_speakers[0]
    text = grammar.sample_unique(np.random.default_rng(3), 1, "train")[0].spoken
    # espeak-ng really reads the generated file: a stock variant's text under a generated name
    # sounds exactly like the stock variant (a voice espeak-ng cannot find falls back silently),
    # and two generated variants on the same speaker sound different.
    lines = (espeak_data() / "voices" / "!v" / "m3").read_text().splitlines()
    body = "\n".join(line for line in lines if not line.startswith(("language", "name"))) + "\n"
    copy_name = RANDOM_VARIANT_PREFIX + "0123456789ab"
    stock = Speaker(**{**train_speakers[0].to_dict(), "variant": "m3"})
    copy = Speaker(
        **{
            **stock.to_dict(),
            "variant": copy_name,
            "variant_spec": f"language variant\nname {copy_name}\n{body}",
        }
    )
    np.testing.assert_array_equal(synthesize(text, copy), synthesize(text, stock))
    first, second = (
        Speaker(**{**stock.to_dict(), "variant": s.variant, "variant_spec": s.variant_spec})
        for s in speakers[:2]
    )
    assert not np.array_equal(synthesize(text, first), synthesize(text, stock))
    assert not np.array_equal(synthesize(text, first), synthesize(text, second))
    with pytest.raises(ValueError, match="generated variant names"):
        espeak_path("../m3", "language variant\n")
    with pytest.raises(ValueError, match="at least 1"):
        make_random_speakers(0, "train", seed=0)


def test_meetings_can_add_generated_voices(tmp_path, train_speakers):
    import json

    from training.tiny.meetings import plan_sessions

    (tmp_path / "speakers.json").write_text(json.dumps([s.to_dict() for s in train_speakers[:8]]))
    jobs = plan_sessions(str(tmp_path), "train", 40, 5, (10.0, 20.0), random_voices=40)
    chosen = [s for _, _, speakers, _, _ in jobs for s in speakers.values()]
    generated = {s.id for s in chosen if s.variant_spec}
    assert generated and {s.id for s in chosen} - generated
    assert all(i.startswith("train-r5-") for i in generated)
    assert jobs == plan_sessions(str(tmp_path), "train", 40, 5, (10.0, 20.0), random_voices=40)
    with pytest.raises(ValueError, match="random_voices"):
        plan_sessions(str(tmp_path), "train", 4, 5, (10.0, 20.0), random_voices=-1)


def test_corpus_round_trip_and_determinism(tmp_path):
    from training.synthetic.corpus import generate_corpus, load_speakers, load_utterances

    first, second = tmp_path / "a", tmp_path / "b"
    options = dict(
        seed=5, num_train_speakers=8, num_test_speakers=4, rows_per_shard=5, num_scripts=3, num_test_scripts=1
    )
    manifest = generate_corpus(first, 12, 4, workers=2, **options)
    generate_corpus(second, 12, 4, workers=1, **options)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(list((first / "data").glob("train-*-of-00003.parquet"))) == 3
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert manifest["splits"]["train"]["utterances"] == 12

    speakers = load_speakers(first)
    rows = {split: list(load_utterances(first, split)) for split in ("train", "test")}
    assert len(rows["train"]) == 12 and len(rows["test"]) == 4
    for split, split_rows in rows.items():
        for row in split_rows:
            audio = row["audio"]
            assert audio["sampling_rate"] == SAMPLE_RATE
            assert row["duration"] == pytest.approx(len(audio["array"]) / SAMPLE_RATE, abs=1e-9)
            assert np.sqrt(np.mean(audio["array"] ** 2)) > 0.01
            assert row["split"] == split and speakers[row["speaker"]].split == split
    train_combos = {speakers[r["speaker"]].combination for r in rows["train"]}
    assert not train_combos & {speakers[r["speaker"]].combination for r in rows["test"]}
    assert not {r["text"] for r in rows["train"]} & {r["text"] for r in rows["test"]}
    eager = load_utterances(first, "test", streaming=False)
    np.testing.assert_array_equal(eager[0]["audio"]["array"], rows["test"][0]["audio"]["array"])


def test_conversation_scripts_have_natural_turn_taking(grammar, train_speakers):
    rng = np.random.default_rng(3)
    same = transitions = with_continuation = backchannels = overlaps = turns = 0
    for _ in range(150):
        num_speakers = int(rng.integers(2, 5))
        target = float(rng.uniform(10, 50))
        script = conversation_script(rng, train_speakers, num_speakers, target, grammar=grammar)
        assert len(set(script.speakers)) == num_speakers
        assert {t.speaker for t in script.turns} == set(script.speakers)
        assert abs(script.estimated_duration / target - 1) < 0.15
        assert list(script.planned_starts) == sorted(script.planned_starts)
        for previous, turn in pairwise(script.turns):
            assert (turn.pause_before == 0) or (turn.overlap == 0)
            if turn.speaker == previous.speaker:
                assert turn.overlap == 0 and 0.5 <= turn.pause_before <= 1.5
            assert turn.overlap <= 1.0 and turn.pause_before <= 1.5
        same += script.same_speaker_transitions()
        transitions += len(script.turns) - 1
        with_continuation += script.same_speaker_transitions() > 0
        backchannels += sum(t.is_backchannel for t in script.turns)
        overlaps += sum(t.overlap > 0 for t in script.turns)
        turns += len(script.turns)
    assert 0.2 < same / transitions < 0.4
    assert with_continuation > 0.6 * 150
    assert 0.05 < backchannels / turns < 0.2 and 0.05 < overlaps / turns < 0.2
    again = conversation_script(np.random.default_rng(9), train_speakers, 3, 30.0, grammar=grammar)
    assert again == conversation_script(np.random.default_rng(9), train_speakers, 3, 30.0, grammar=grammar)
    assert ConversationScript.from_dict(again.to_dict()) == again


def test_render_conversation_follows_the_script(grammar, train_speakers):
    rng = np.random.default_rng(4)
    turn_taking = TurnTaking(continue_probability=0.5, backchannel_probability=0.0, overlap_probability=0.0)
    script = conversation_script(rng, train_speakers, 2, 15.0, grammar=grammar, turn_taking=turn_taking)
    mix, turns = render_conversation(script, {s.id: s for s in train_speakers})
    assert [t["speaker"] for t in turns] == [t.speaker for t in script.turns]
    assert [t["text"] for t in turns] == [t.text for t in script.turns]
    assert len(mix) / SAMPLE_RATE == pytest.approx(turns[-1]["end"])
    assert abs(len(mix) / SAMPLE_RATE / script.estimated_duration - 1) < 0.25
    for previous, turn, planned in zip(turns, turns[1:], script.turns[1:], strict=False):
        assert turn["start"] - previous["end"] == pytest.approx(planned.pause_before, abs=1e-3)
    # Each turn's audio is where the turns say: loud inside, silent in the pauses.
    for previous, turn in pairwise(turns):
        gap = mix[int(previous["end"] * SAMPLE_RATE) + 1 : int(turn["start"] * SAMPLE_RATE) - 1]
        assert np.abs(gap).max(initial=0.0) == 0.0
        inside = mix[int(turn["start"] * SAMPLE_RATE) : int(turn["end"] * SAMPLE_RATE)]
        assert np.sqrt(np.mean(inside**2)) > 0.01


def test_conversation_script_ends_when_nothing_fits_and_everyone_has_spoken(grammar, train_speakers):
    """Turns too long for the time left: the others get forced back-channels and the session ends
    short, instead of forcing one more back-channel on a speaker already heard."""

    def duration(text, speaker):
        return 0.4 if len(text.split()) <= 2 else 7.0

    rng = np.random.default_rng(2)  # a draw whose back-channels end before the session's lower bound
    script = conversation_script(rng, train_speakers, 4, 10.0, grammar=grammar, duration_fn=duration)
    assert {t.speaker for t in script.turns} == set(script.speakers)
    assert sum(t.is_backchannel for t in script.turns) == 3
    assert script.estimated_duration < 10.0 * 0.85
