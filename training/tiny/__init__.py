"""SpeakerLM-Tiny: the small models trained from scratch on the synthetic corpus."""
