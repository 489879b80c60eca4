"""The `speaker-diarization-recognition` pipeline: audio (+ registered speakers) -> transcript by roles.

Remote code: shipped to the Hub next to the model, so it imports only torch, transformers, numpy
and the standard library. Objects loaded from a Hub folder each come from their own copy of the
code, so the processor is used through its methods, never checked with `isinstance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import GenerationConfig, Pipeline

TASK = "speaker-diarization-recognition"
MODEL_TASKS = ("sdr", "asr")


class SpeakerLMPipeline(Pipeline):
    """Who spoke when, and what: one recording segment per input.

    ```python
    pipe = pipeline("speaker-diarization-recognition", model=repo, trust_remote_code=True)
    pipe("meeting.wav", speakers={"Mike": "mike.wav"})
    # {"text": "Mike: ...\\nspk0: ...", "turns": [{"speaker": "Mike", "text": "..."}, ...]}
    ```

    An input is a path, a 1-D float array at 16 kHz, or a `{"raw"|"array", "sampling_rate"}` dict;
    such a dict may carry its own `"speakers"`. A list of inputs gives a list of results.

    Call arguments:
        speakers: `{name: clip | [clips] | embedding}` registered for every input (None: No-Regist,
            anonymous `spkK` labels).
        task: "sdr" (transcribe by roles, the default) or "asr" (plain transcription).
        return_timestamps: ask for `[start-end]` turn times; the turns then carry "start" and "end".
        generation parameters (`max_new_tokens`, `num_beams`, ...) go to `model.generate`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    # A 50 s meeting segment by roles needs a few hundred tokens; the generation config may set its own.
    _default_generation_config = GenerationConfig(max_new_tokens=1024)

    def _sanitize_parameters(
        self,
        speakers: Mapping | None = None,
        task: str | None = None,
        return_timestamps: bool | None = None,
        **generate_kwargs,
    ) -> tuple[dict, dict, dict]:
        preprocess_params: dict[str, Any] = {}
        if speakers is not None:
            if not isinstance(speakers, Mapping):
                raise TypeError(
                    f"speakers must be a {{name: clip or embedding}} mapping, got {type(speakers).__name__}"
                )
            preprocess_params["speakers"] = speakers
        if task is not None:
            if task not in MODEL_TASKS:
                raise ValueError(f"task {task!r} is not one of {MODEL_TASKS}")
            preprocess_params["task"] = task
        if return_timestamps is not None:
            preprocess_params["timestamps"] = bool(return_timestamps)
        return preprocess_params, generate_kwargs, {}

    def preprocess(
        self, inputs: Any, speakers: Mapping | None = None, task: str = "sdr", timestamps: bool = False
    ) -> dict[str, Any]:
        if isinstance(inputs, Mapping) and "speakers" in inputs:
            inputs = dict(inputs)
            own = inputs.pop("speakers")
            if speakers is not None and own is not None:
                raise ValueError(
                    "speakers were given both in the input dict and as a call argument; give one"
                )
            speakers = own if own is not None else speakers
        features = self.processor(
            [inputs], speakers=[speakers], task=task, timestamps=timestamps, return_tensors="pt"
        )
        # Audio features follow the model's dtype (bf16/fp16 checkpoints); ids and masks stay integer.
        return dict(features.to(self.dtype))

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs) -> dict[str, torch.Tensor]:
        prompt_length = model_inputs["input_ids"].shape[1]
        generated = self.model.generate(**model_inputs, **self._prepare_generate_kwargs(generate_kwargs))
        # generate(input_ids=...) returns the prompt followed by the new tokens.
        return {"tokens": generated[:, prompt_length:]}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        tokens = model_outputs["tokens"]
        return {
            "text": self.processor.batch_decode(tokens)[0],
            "turns": self.processor.post_process(tokens)[0],
        }


__all__ = ["SpeakerLMPipeline", "TASK"]
