"""Scoring of transcripts by roles: CER, cpCER, saCER, tcpCER, Δcp / Δsa, speaker-count error, and
the DER of their turn times.

Conventions (see each module for details):

- Text is normalised (NFKC full/half width, case folding, punctuation and symbols removed) and
  scored per character with whitespace removed, for Chinese and English alike; cpCER equals
  meeteval's cpWER on this character-split text.
- Each speaker's turns are concatenated in time order (by ``start`` when every turn has one,
  else in list order). Speakers with no scored character are ignored.
- Rates pool over sessions as summed errors / summed reference characters. A reference with
  no characters has rate ``None`` (meeteval's convention), and so has its Δ.
- S/D/I come from the minimum-cost alignment with the most substitutions, whichever backend
  (rapidfuzz when installed, else numpy) computes them.
"""

from .cer import cer
from .cp import SpeakerErrorCounts, cp_cer, minimum_permutation_counts
from .der import DiarizationErrors, DiarizationReport, diarization_error, diarization_errors
from .levenshtein import ErrorCounts, edit_counts, edit_distance, pairwise_counts, pairwise_distances
from .normalize import normalize_text, scoring_characters
from .readers import (
    FORMATS,
    Sessions,
    detect_format,
    load_sessions,
    parse_role_transcript,
    read_alimeeting,
    read_json,
    read_role_transcript,
    read_rttm,
    read_stm,
)
from .sa import sa_cer
from .scoring import MODES, ScoreReport, SessionScore, score_session, score_sessions
from .tc import tcp_cer
from .turns import Turn, as_turns, session_text, speaker_texts

__all__ = [
    "FORMATS",
    "MODES",
    "DiarizationErrors",
    "DiarizationReport",
    "ErrorCounts",
    "ScoreReport",
    "SessionScore",
    "Sessions",
    "SpeakerErrorCounts",
    "Turn",
    "as_turns",
    "cer",
    "cp_cer",
    "detect_format",
    "diarization_error",
    "diarization_errors",
    "edit_counts",
    "edit_distance",
    "load_sessions",
    "minimum_permutation_counts",
    "normalize_text",
    "pairwise_counts",
    "pairwise_distances",
    "parse_role_transcript",
    "read_alimeeting",
    "read_json",
    "read_role_transcript",
    "read_rttm",
    "read_stm",
    "sa_cer",
    "score_session",
    "score_sessions",
    "scoring_characters",
    "session_text",
    "speaker_texts",
    "tcp_cer",
]
