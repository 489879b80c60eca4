"""Render synthetic meetings into prepared SDR shards (the `speakerlm prepare-data` row schema).

    python -m training.tiny.meetings --corpus /work/data/synthetic-en --split test \
        --num-sessions 120 --out /work/data/meetings-test --seed 1

Each session is a conversation script (`training/synthetic/conversation.py`: 2-4 speakers,
10-50 s, same-speaker continuations after a pause, back-channels, overlaps) rendered with the
corpus's speakers of `split`, plus one enrollment clip per speaker: other sentences of the same
voice, 3-10 s, never part of the session. Train sessions feed stages 3 and 4 ("real" meetings
with natural turn-taking); test sessions (unseen voices, unseen sentences) are the held-out
evaluation set.

`--random-voices N` adds N speakers with generated espeak-ng variants
(`training.synthetic.voices.make_random_speakers`) to the corpus's speakers: thousands of timbres
instead of about a hundred, for acoustic training that has to hold up on voices it never heard.
Their parameters (with each variant's text) are written to `<split>-random-speakers.json`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

import numpy as np

from speakerlm_hf.data.audio import encode_flac
from speakerlm_hf.data.shards import write_parquet_shards

from ..synthetic.conversation import ConversationScript, conversation_script, render_conversation
from ..synthetic.corpus import SPLIT_CODES, load_speakers
from ..synthetic.grammar import Grammar
from ..synthetic.synthesis import SAMPLE_RATE, synthesize, utterance_jitter
from ..synthetic.voices import make_random_speakers

_GRAMMAR: Grammar | None = None


def grammar() -> Grammar:
    global _GRAMMAR
    if _GRAMMAR is None:
        _GRAMMAR = Grammar()
    return _GRAMMAR


def enrollment_clip(speaker, rng: np.random.Generator, split: str, low: float = 3.0, high: float = 10.0):
    """Sentences of one voice joined with short pauses until the clip lasts at least `low` seconds."""
    pieces, total = [], 0.0
    while total < low:
        sentence = grammar().sample(rng, split)
        audio = synthesize(sentence.spoken, speaker, *utterance_jitter(rng))
        if total and total + audio.size / SAMPLE_RATE > high:
            break
        pieces += [audio, np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)]
        total += audio.size / SAMPLE_RATE + 0.3
    return np.concatenate(pieces[:-1])


def render_session(job: tuple) -> dict:
    session_id, script_dict, speakers, split, seed = job
    script = ConversationScript.from_dict(script_dict)
    rng = np.random.default_rng(seed)
    mix, turns = render_conversation(script, speakers, rng)
    enrollment = []
    for speaker in script.speakers:
        clip = enrollment_clip(speakers[speaker], rng, split)
        enrollment.append(
            {
                "speaker": speaker,
                "clips": [
                    {"bytes": encode_flac(clip), "start": 0.0, "end": round(clip.size / SAMPLE_RATE, 3)}
                ],
            }
        )
    return {
        "id": session_id,
        "corpus": "synthetic-meetings",
        "session": session_id,
        "start": 0.0,
        "end": round(mix.size / SAMPLE_RATE, 3),
        "audio": {"bytes": encode_flac(mix), "path": f"{session_id}.flac"},
        "turns": [{**t, "start": round(t["start"], 3), "end": round(t["end"], 3)} for t in turns],
        "enrollment": enrollment,
        "pattern": script.pattern,
    }


def plan_sessions(
    corpus: str, split: str, count: int, seed: int, duration: tuple[float, float], random_voices: int = 0
):
    """Jobs for `render_session`: `count` conversation scripts over the corpus's speakers of
    `split`, plus `random_voices` speakers with generated variants (drawn from `seed`)."""
    speakers = [v for v in load_speakers(corpus).values() if v.split == split]
    if not speakers:
        raise ValueError(f"{corpus!r} has no speakers of split {split!r}")
    if random_voices < 0:
        raise ValueError(f"random_voices must be at least 0, got {random_voices}")
    if random_voices:
        speakers += make_random_speakers(random_voices, split, seed)
    return plan_sessions_for(speakers, split, count, seed, duration)


def plan_sessions_for(speakers, split: str, count: int, seed: int, duration: tuple[float, float]):
    """Jobs for `render_session` over the given `Speaker`s (sentences of `split`)."""
    by_id = {s.id: s for s in speakers}
    ids = sorted(by_id)
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 7])
    jobs = []
    for index in range(count):
        num = int(rng.integers(2, 5))
        script = conversation_script(
            rng,
            [by_id[i] for i in ids],
            num,
            round(float(rng.uniform(*duration)), 2),
            grammar=grammar(),
            split=split,
        )
        chosen = {s: by_id[s] for s in script.speakers}
        jobs.append((f"{split}-meeting{index:05d}", script.to_dict(), chosen, split, [seed, index]))
    return jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", required=True, help="synthetic corpus folder (speakers.json)")
    parser.add_argument("--split", choices=("train", "test"), required=True)
    parser.add_argument("--num-sessions", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-duration", type=float, default=10.0)
    parser.add_argument("--max-duration", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--random-voices",
        type=int,
        default=0,
        help="speakers with generated voice variants to add (default 0)",
    )
    args = parser.parse_args(argv)
    jobs = plan_sessions(
        args.corpus,
        args.split,
        args.num_sessions,
        args.seed,
        (args.min_duration, args.max_duration),
        random_voices=args.random_voices,
    )
    patterns = {}
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:

        def rows():
            for row in pool.imap(render_session, jobs, chunksize=2):
                patterns[row["id"]] = row.pop("pattern")
                yield row

        shards = write_parquet_shards(rows(), args.out, split=args.split, rows_per_shard=250)
    Path(args.out, f"{args.split}-patterns.json").write_text(json.dumps(patterns, indent=0))
    if args.random_voices:
        generated = {
            s.id: s.to_dict() for _, _, chosen, _, _ in jobs for s in chosen.values() if s.variant_spec
        }
        Path(args.out, f"{args.split}-random-speakers.json").write_text(
            json.dumps([generated[k] for k in sorted(generated)], indent=1) + "\n"
        )
    print(f"wrote {len(patterns)} sessions in {len(shards)} shard(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
