"""SpeakerLM for Hugging Face: speaker diarization and recognition with one multimodal LLM."""

__version__ = "0.1.0"
