"""Test-wide settings and shared fixtures."""

import shutil

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread and lose much when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def rendered_meetings(tmp_path_factory):
    """Three short rendered meetings (10-14 s) of the test split of a tiny synthetic corpus (4 unseen
    voices), in the prepared format of `training/tiny/meetings.py`; needs espeak-ng and sox."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("needs espeak-ng and sox")
    from training.synthetic.corpus import generate_corpus
    from training.tiny.meetings import main as render_meetings

    root = tmp_path_factory.mktemp("rendered")
    corpus, meetings = root / "corpus", root / "meetings"
    generate_corpus(corpus, 24, 24, seed=5, num_train_speakers=4, num_test_speakers=4, workers=1)
    render_meetings(
        ["--corpus", str(corpus), "--split", "test", "--num-sessions", "3", "--out", str(meetings)]
        + ["--min-duration", "10", "--max-duration", "14", "--workers", "1"]
    )
    return meetings
