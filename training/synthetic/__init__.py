"""Synthetic English speech corpus: espeak-ng speakers, template sentences, utterances, conversation scripts."""
