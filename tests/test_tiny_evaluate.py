"""The held-out evaluation's registration draws (`training/tiny/evaluate.py`)."""

import numpy as np

from training.tiny.evaluate import registrations


def fake_sessions(count: int) -> list[dict]:
    sessions = []
    for index in range(count):
        speakers = [f"s{index}-{k}" for k in range(2 + index % 2)]
        sessions.append(
            {
                "id": f"meeting{index}",
                "turns": [
                    {"speaker": s, "start": float(k), "end": k + 0.5, "text": "hi"}
                    for k, s in enumerate(speakers)
                ],
                # every speaker's clip is distinct: 10 * session + speaker
                "enrollment": {
                    s: np.full(4, 10 * index + k, dtype=np.float32) for k, s in enumerate(speakers)
                },
            }
        )
    return sessions


def test_over_regist_draws_do_not_depend_on_how_many_sessions_are_scored():
    sessions = fake_sessions(8)
    few = registrations([dict(s) for s in sessions[:3]], extra=4, seed=0, pool=sessions)
    all_ = registrations([dict(s) for s in sessions], extra=4, seed=0, pool=sessions)
    for index in range(3):
        assert list(few["over"][index]) == list(all_["over"][index])
        for name, clip in few["over"][index].items():
            assert np.array_equal(clip, all_["over"][index][name])
    for index, session in enumerate(sessions):
        present = {t["speaker"] for t in session["turns"]}
        match, over = all_["match"][index], all_["over"][index]
        assert all_["no"][index] is None
        assert len(match) == len(present) and set(match) <= set(over)
        assert len(over) == len(present) + 4
        # the extra speakers are other sessions' voices, never this session's
        own = {session["enrollment"][s].tobytes() for s in present}
        extras = [clip for name, clip in over.items() if name not in match]
        assert not any(clip.tobytes() in own for clip in extras)
