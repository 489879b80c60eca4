"""Score a SpeakerLM on held-out sessions in the three registration modes, overall and by turn pattern.

    python -m training.tiny.evaluate --model outputs/tiny/stage4c/final --data /work/data/meetings-test \
        --limit 150 --extra-speakers 20 --output outputs/tiny/eval.json

For each prepared session (`training/tiny/meetings.py`, unseen voices and sentences):
- No-Regist: the model labels speakers spk0, spk1, ...; scored with cpCER (and CER, Δcp).
- Match-Regist: every present speaker enrolled by its clip under a name drawn for the session;
  scored with saCER (and Δsa), names must match.
- Over-Regist: the same plus `--extra-speakers` absent speakers, enrolled by clips of voices
  from other sessions; scored with saCER / Δsa.
Sessions where a speaker continues after a pause (AAB / ABB: two consecutive reference turns of
one speaker) are also scored apart from the others: a model that changes label at every pause
fails there.

For a model trained with CTC, each turn is also placed in time as the pipeline places it (CTC
forced alignment of its words, `timestamps_from="ctc"`) and relabelled by its voice as the
pipeline relabels it (`--no-relabel` keeps the model's labels), and who spoke when is scored too:
tcpCER with a 1 s collar, and DER (no collar). `--oracle` also scores the same decoded turns
relabelled with what relabelling otherwise guesses: the true number of speakers (No-Regist) and
which of the enrolled people are present (Over-Regist), to show what each guess costs.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList

from speakerlm_hf.data import decode_prepared_row, load_prepared
from speakerlm_hf.data.registration import ENGLISH_NAMES
from speakerlm_hf.generation_speakerlm import transcript_logits_processors, transcripts_aligned_lines
from speakerlm_hf.linking_speakerlm import (
    DEFAULT_VOICE_THRESHOLDS,
    VoiceThresholds,
    model_embedder,
    model_window_embedder,
)
from speakerlm_hf.metrics import diarization_error, score_sessions
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.pipeline_speakerlm import aligned_turns, embed_speakers, line_speaker, speaker_voices
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor, parse_role_transcript
from speakerlm_hf.segmentation_speakerlm import segment_recording

MODES = ("no", "match", "over")
# `--oracle`: what each mode's relabelling is told that it otherwise guesses (`timed_turns`)
ORACLES = {"no": "count", "over": "present"}
TCP_COLLAR = 1.0


def has_continuation(turns: list[dict]) -> bool:
    ordered = sorted(turns, key=lambda t: (t["start"], t["end"]))
    return any(a["speaker"] == b["speaker"] for a, b in pairwise(ordered))


def load_sessions(folder: str, split: str, limit: int | None) -> list[dict]:
    """Held-out sessions with their audio and one enrollment clip per speaker."""
    rows = load_prepared(folder, split, streaming=False)
    sessions = []
    for row in rows.select(range(min(limit or len(rows), len(rows)))):
        session = decode_prepared_row(row, max_clips=1)
        session["enrollment"] = {s: clips[0] for s, clips in session["enrollment"].items()}
        sessions.append(session)
    return sessions


def registrations(
    sessions: list[dict], extra: int, seed: int, pool: list[dict] | None = None
) -> dict[str, list[dict | None]]:
    """For each mode, one `{name: clip}` per session (None for No-Regist) and the reference names.

    Over-Regist's absent speakers are drawn from the enrollment of the `pool` sessions (default:
    `sessions`) other than the session itself; with the whole split as the pool, each session's
    draw does not depend on how many sessions are scored."""
    pool = sessions if pool is None else pool
    out = {mode: [] for mode in MODES}
    for index, session in enumerate(sessions):
        rng = np.random.default_rng([seed, index])
        present = list(
            dict.fromkeys(t["speaker"] for t in sorted(session["turns"], key=lambda t: t["start"]))
        )
        others = [
            (s, clip)
            for other in pool
            if other["id"] != session["id"]
            for s, clip in other["enrollment"].items()
            if s not in present
        ]
        unique = list({s: clip for s, clip in others}.items())
        chosen = [unique[i] for i in rng.permutation(len(unique))[:extra]]
        names = [str(n) for n in rng.permutation(ENGLISH_NAMES)]
        naming = dict(zip(present + [s for s, _ in chosen], names, strict=False))
        match = {naming[s]: session["enrollment"][s] for s in present}
        over_items = list(match.items()) + [(naming[s], clip) for s, clip in chosen]
        order = rng.permutation(len(over_items))
        out["no"].append(None)
        out["match"].append(match)
        out["over"].append(dict(over_items[i] for i in order))
        session["naming"] = naming
    return out


@torch.no_grad()
def transcribe(
    model,
    processor,
    sessions,
    speakers,
    batch_size: int,
    max_new_tokens: int,
    constrain_labels: bool = True,
    ctc_weight: float | None = None,
    speaker_weight: float | None = None,
    voice_thresholds: VoiceThresholds | None = None,
) -> tuple[list[str], list]:
    """Greedy transcripts, decoded as the pipeline decodes them: with `constrain_labels` every turn
    starts with a registered name or an anonymous label; `ctc_weight` / `speaker_weight` as the
    pipeline's (None: the model's defaults, joint CTC decoding for a model trained with CTC), and
    `voice_thresholds` (None: the model's `config.voice_thresholds`).
    Also each transcript's `aligned_lines` (`transcripts_aligned_lines`) for a model trained with CTC
    (`config.audio_ctc`), whatever the CTC weight (else None)."""
    texts, placements = [], []
    for start in range(0, len(sessions), batch_size):
        chunk = sessions[start : start + batch_size]
        registered = speakers[start : start + batch_size]
        inputs = processor([s["audio"] for s in chunk], speakers=registered)
        prompt_length = inputs["input_ids"].shape[1]
        processors = transcript_logits_processors(
            model,
            processor.tokenizer,
            inputs,
            [list(r or {}) for r in registered],
            constrain_labels=constrain_labels,
            ctc_weight=ctc_weight,
            speaker_weight=speaker_weight,
            voice_thresholds=voice_thresholds,
        )
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList(processors),
        )
        texts += processor.batch_decode(out[:, prompt_length:])
        if model.config.audio_ctc:
            placements += transcripts_aligned_lines(
                model, processor.tokenizer, inputs, processors, out[:, prompt_length:]
            )
        else:
            placements += [None] * len(chunk)
    return texts, placements


def score(sessions, hypotheses, mode: str, subset=None) -> dict:
    chosen = [i for i in range(len(sessions)) if subset is None or subset(sessions[i])]
    if not chosen:
        return {}
    named = mode != "no"
    reference = {
        sessions[i]["id"]: [
            {**t, "speaker": sessions[i]["naming"][t["speaker"]] if named else t["speaker"]}
            for t in sessions[i]["turns"]
        ]
        for i in chosen
    }
    hypothesis = {sessions[i]["id"]: hypotheses[i] for i in chosen}
    report = score_sessions(reference, hypothesis, mode="sa" if named else "cp")
    scores = {
        "sessions": len(chosen),
        "cer": report.cer.rate,
        ("sacer" if named else "cpcer"): report.attributed.rate,
        ("delta_sa" if named else "delta_cp"): report.delta,
        "speaker_count_accuracy": report.speaker_count_accuracy,
    }
    if all("start" in turn for turns in hypothesis.values() for turn in turns):
        timed = score_sessions(reference, hypothesis, mode="tcp", collar=TCP_COLLAR)
        scores["tcpcer"] = timed.attributed.rate
        scores["der"] = diarization_error(reference, hypothesis).total.rate
    return scores


def timed_turns(
    sessions: list[dict],
    registered: list,
    texts: list[str],
    placements: list,
    token_seconds: float,
    embed=None,
    thresholds: VoiceThresholds = DEFAULT_VOICE_THRESHOLDS,
    embed_windows=None,
    masks: list | None = None,
    oracle: str | None = None,
) -> list[list[dict]]:
    """Each session's transcript as turns, placed in time and, with an `embed`der, cut where the
    voice changes (windows by `embed_windows` when given) and relabelled by voice with
    `thresholds` as the pipeline does (`aligned_turns`). `masks` (from `speech_masks`) saves
    finding each session's speech again when the same sessions are decoded many times.

    `oracle` gives the relabelling what it cannot know, to measure what guessing it costs:
    "count", the true number of speakers (as a `num_speakers` hint); "present", only the enrolled
    people who are in the session to choose from (a turn the model gave an absent enrolled name
    stays a named turn)."""
    if masks is None:
        masks = speech_masks(sessions) if embed is not None else [None] * len(sessions)
    hypotheses = []
    for session, enrolled, text, lines, mask in zip(
        sessions, registered, texts, placements, masks, strict=True
    ):
        turns, voices, count = parse_role_transcript(text), speaker_voices(enrolled or {}), None
        if oracle == "count":
            count = len({turn["speaker"] for turn in session["turns"]})
        elif oracle == "present" and voices:
            present = {session["naming"][turn["speaker"]] for turn in session["turns"]}
            kept = {name: vector for name, vector in voices.items() if name in present}
            if kept and lines is not None:
                # the lines keep their alignment under the new name (`place_turns` matches them)
                stand_in, absent = next(iter(kept)), voices.keys() - kept.keys()
                turns = [
                    {**turn, "speaker": stand_in} if turn["speaker"] in absent else turn for turn in turns
                ]
                lines = [
                    (f"{stand_in}:".encode(), *line[1:])
                    if line is not None and line_speaker(line) in absent
                    else line
                    for line in lines
                ]
                voices = kept
        turns, _ = aligned_turns(
            turns,
            lines,
            token_seconds,
            session["audio"],
            mask,
            embed,
            voices,
            count,
            count,
            thresholds=thresholds,
            embed_windows=embed_windows,
        )
        hypotheses.append(turns)
    return hypotheses


def scored_turn(turn: dict) -> dict:
    """A scored hypothesis turn as the evaluation output keeps it: speaker, times (s) and words."""
    timed = {key: round(float(turn[key]), 3) for key in ("start", "end") if turn.get(key) is not None}
    return {"speaker": turn["speaker"], **timed, "text": turn["text"]}


def speech_masks(sessions: list[dict]) -> list:
    """Each session's speech mask, as `timed_turns` finds it (energy VAD of the recording)."""
    return [segment_recording(session["audio"]).speech for session in sessions]


def evaluate(
    model_dir: str,
    data: str,
    split: str,
    limit: int | None,
    extra: int,
    seed: int,
    batch_size: int = 8,
    max_new_tokens: int = 400,
    constrain_labels: bool = True,
    ctc_weight: float | None = None,
    speaker_weight: float | None = None,
    relabel: bool = True,
    oracle: bool = False,
) -> dict:
    model = SpeakerLMForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = SpeakerLMProcessor.from_pretrained(model_dir)
    processor.match_model(model.config)
    sessions = load_sessions(data, split, limit)
    # absent speakers for Over-Regist come from the whole split, whatever `limit` is
    pool = load_sessions(data, split, None) if limit and extra else sessions
    speakers = registrations(sessions, extra, seed, pool)
    embed = model_embedder(model) if relabel else None
    windows = model_window_embedder(model) if relabel else None
    thresholds = VoiceThresholds.from_config(model.config)
    results, outputs, scored = {}, {}, {}
    audio_seconds = sum(s["audio"].size for s in sessions) / 16000
    # the oracle passes find the sessions' speech once for all modes (the timed pass finds it
    # itself, as the pipeline does, so that the real-time factor counts it)
    oracle_masks = speech_masks(sessions) if oracle and embed is not None else None
    for mode in MODES:
        began = time.perf_counter()
        # enrollment embedded once per session, as the pipeline embeds it once per call
        registered = [embed_speakers(model, processor, clips) or None for clips in speakers[mode]]
        texts, placements = transcribe(
            model,
            processor,
            sessions,
            registered,
            batch_size,
            max_new_tokens,
            constrain_labels,
            ctc_weight,
            speaker_weight,
        )
        hypotheses = timed_turns(
            sessions, registered, texts, placements, processor.audio_token_seconds, embed, thresholds, windows
        )
        elapsed = time.perf_counter() - began
        if oracle and embed is not None and mode in ORACLES:
            known = timed_turns(
                sessions,
                registered,
                texts,
                placements,
                processor.audio_token_seconds,
                embed,
                thresholds,
                windows,
                masks=oracle_masks,
                oracle=ORACLES[mode],
            )
            results.setdefault("oracle", {})[mode] = score(sessions, known, mode)
        results[mode] = {
            "all": score(sessions, hypotheses, mode),
            "continuation": score(sessions, hypotheses, mode, lambda s: has_continuation(s["turns"])),
            "no_continuation": score(sessions, hypotheses, mode, lambda s: not has_continuation(s["turns"])),
            "rtf": elapsed / audio_seconds,
        }
        outputs[mode] = {s["id"]: text for s, text in zip(sessions, texts, strict=True)}
        scored[mode] = {
            s["id"]: [scored_turn(turn) for turn in turns]
            for s, turns in zip(sessions, hypotheses, strict=True)
        }
    results["extra_speakers"] = extra
    results["constrain_labels"] = constrain_labels
    results["ctc_weight"] = ctc_weight
    results["speaker_weight"] = speaker_weight
    results["relabel_speakers"] = relabel
    results["voice_thresholds"] = thresholds.to_dict()
    results["audio_hours"] = audio_seconds / 3600
    return {"results": results, "transcripts": outputs, "turns": scored}


def format_results(results: dict) -> str:
    lines = [
        f"{'mode':<8} {'subset':<16} {'n':>4} {'CER %':>7} {'cp/saCER %':>11} {'Δ %':>6} {'spk acc':>8} "
        f"{'tcpCER %':>9} {'DER %':>6}"
    ]
    for mode in MODES:
        for subset in ("all", "continuation", "no_continuation"):
            r = results[mode][subset]
            if not r:
                continue
            timed = f" {100 * r['tcpcer']:>9.2f} {100 * r['der']:>6.2f}" if r.get("der") is not None else ""
            lines.append(result_row(mode, subset, r) + timed)
    for mode, r in results.get("oracle", {}).items():
        lines.append(result_row(mode, f"told {ORACLES[mode]}", r))
    return "\n".join(lines)


def result_row(mode: str, subset: str, r: dict) -> str:
    """A `format_results` row up to the speaker count: mode, subset, sessions, CER, cp/saCER, Δ."""
    attributed = r.get("cpcer", r.get("sacer"))
    delta = r.get("delta_cp", r.get("delta_sa"))
    return (
        f"{mode:<8} {subset:<16} {r['sessions']:>4} {100 * r['cer']:>7.2f} {100 * attributed:>11.2f} "
        f"{100 * delta:>6.2f} {100 * (r['speaker_count_accuracy'] or 0):>8.1f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="prepared sessions (training/tiny/meetings.py)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--extra-speakers", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument(
        "--free-labels",
        action="store_true",
        help="let the model write any speaker label (default: registered names and spkK only, as the pipeline)",
    )
    parser.add_argument(
        "--ctc-weight",
        type=float,
        default=None,
        help="joint CTC / attention decoding weight (default: the pipeline's, the model's "
        "decoding_ctc_weight or 0.8 for a model trained with CTC; 0 = off)",
    )
    parser.add_argument(
        "--speaker-weight",
        type=float,
        default=None,
        help="how strongly labels follow the voice at each turn's start (default: the pipeline's, 1.0; 0 = off)",
    )
    parser.add_argument(
        "--no-relabel",
        action="store_true",
        help="keep the labels the model wrote (default: turns relabelled by voice, as the pipeline does)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score the decoded turns relabelled with the true number of speakers (No-Regist) "
        "and with only the enrolled people present to choose from (Over-Regist): what guessing them costs",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="JSON with the scores, every model transcript and the turns scored (timed, relabelled)",
    )
    args = parser.parse_args(argv)
    report = evaluate(
        args.model,
        args.data,
        args.split,
        args.limit,
        args.extra_speakers,
        args.seed,
        args.batch_size,
        args.max_new_tokens,
        not args.free_labels,
        args.ctc_weight,
        args.speaker_weight,
        not args.no_relabel,
        args.oracle,
    )
    print(format_results(report["results"]))
    for mode in MODES:
        print(f"RTF {mode}: {report['results'][mode]['rtf']:.4f}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
