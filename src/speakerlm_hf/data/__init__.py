"""The data layer: meeting corpora -> segments (parquet), stage-2 simulation, registration sampling, collation.

Library code (not shipped to the Hub with the model). Needs `datasets` and `soundfile`.
"""

from .collator import SpeakerLMDataCollator, relabel_turns
from .corpora import (
    Session,
    Utterance,
    aishell4_sessions,
    aishell5_sessions,
    alimeeting_sessions,
    strip_markup,
    textgrid_folder_sessions,
)
from .prepare import prepare_sessions, session_rows
from .registration import (
    DEFAULT_NAMES,
    NAME_POOLS,
    Registration,
    RegistrationSampler,
    SpeakerBank,
    compute_speaker_bank,
    name_pool,
    speaker_identity,
)
from .segments import SegmentConfig, cut_segments, enrollment_pool, segment_turns
from .shards import (
    SEGMENT_FEATURES,
    decode_prepared_row,
    load_prepared,
    push_prepared_to_hub,
    write_parquet_shards,
)
from .simulation import ConversationSimulator, SimulationConfig, simulate_conversations
from .textgrid import TextGrid, parse_textgrid, read_textgrid

__all__ = [
    "SpeakerLMDataCollator",
    "relabel_turns",
    "Session",
    "Utterance",
    "aishell4_sessions",
    "aishell5_sessions",
    "alimeeting_sessions",
    "strip_markup",
    "textgrid_folder_sessions",
    "prepare_sessions",
    "session_rows",
    "DEFAULT_NAMES",
    "NAME_POOLS",
    "Registration",
    "RegistrationSampler",
    "SpeakerBank",
    "compute_speaker_bank",
    "name_pool",
    "speaker_identity",
    "SegmentConfig",
    "cut_segments",
    "enrollment_pool",
    "segment_turns",
    "SEGMENT_FEATURES",
    "decode_prepared_row",
    "load_prepared",
    "push_prepared_to_hub",
    "write_parquet_shards",
    "ConversationSimulator",
    "SimulationConfig",
    "simulate_conversations",
    "TextGrid",
    "parse_textgrid",
    "read_textgrid",
]
