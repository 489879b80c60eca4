"""Speaker bank of the synthetic corpus's train speakers, for Over-Regist in stages 2-4.

    python -m training.tiny.speaker_bank --corpus /work/data/synthetic-en \
        --model outputs/tiny/assembled --out outputs/tiny/bank-simulated.safetensors --corpus-name simulated

One embedding per train speaker: the model's frozen extractor averaged over `--clips` of its
utterances (`compute_speaker_bank`, the same average the model takes of enrollment pieces).
`--corpus-name` must be the `corpus` of the rows the bank serves ("simulated" for the stage-2
simulator, "synthetic-meetings" for rendered meetings), so that a session's own speakers are never
drawn as its absent extras.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from speakerlm_hf.data.registration import SpeakerBank, compute_speaker_bank
from speakerlm_hf.feature_extraction_speakerlm import SpeakerLMFeatureExtractor
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration

from ..synthetic.corpus import load_utterances


def bank_rows(corpus: str, corpus_name: str, clips: int):
    """One pseudo-row per speaker whose enrollment pool is `clips` of its utterances."""
    pools = defaultdict(list)
    for row in load_utterances(corpus, "train", streaming=True, decode=False):
        pool = pools[row["speaker"]]
        if len(pool) < clips:
            pool.append({"bytes": row["audio"]["bytes"], "start": 0.0, "end": float(row["duration"])})
    for speaker, pool in sorted(pools.items()):
        yield {
            "session": f"bank-{speaker}",
            "corpus": corpus_name,
            "enrollment": [{"speaker": speaker, "clips": pool}],
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--model", required=True, help="a SpeakerLM folder (its extractor is used)")
    parser.add_argument("--out", required=True, nargs="+", help="one bank path per --corpus-name")
    parser.add_argument("--corpus-name", required=True, nargs="+")
    parser.add_argument("--clips", type=int, default=2)
    args = parser.parse_args(argv)
    if len(args.out) != len(args.corpus_name):
        parser.error("give one --out per --corpus-name")
    model = SpeakerLMForConditionalGeneration.from_pretrained(args.model).eval()
    extractor = SpeakerLMFeatureExtractor.from_pretrained(args.model)
    bank = compute_speaker_bank(model, extractor, bank_rows(args.corpus, args.corpus_name[0], args.clips))
    speakers = [identity.split("/", 1)[1] for identity in bank.identities]
    for out, name in zip(args.out, args.corpus_name, strict=True):
        SpeakerBank(bank.sessions, [f"{name}/{s}" for s in speakers], bank.embeddings).save(out)
        print(f"wrote {len(speakers)} speakers to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
