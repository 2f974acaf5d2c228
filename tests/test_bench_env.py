"""Which commit a benchmark result is stamped with (oea_trt.bench.env.git_commit)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from oea_trt.bench.env import git_commit

REPO = Path(__file__).resolve().parents[1]


def test_the_senders_commit_wins_over_a_local_git(monkeypatch):
    # The GPU box's copy of the tree once carried a stale .git that stamped results with an old
    # commit; the commit the sender names must take precedence.
    monkeypatch.setenv("OEA_GIT_COMMIT", "abc1234")
    monkeypatch.setenv("OEA_GIT_DIRTY", "1")
    assert git_commit(str(REPO)) == {"commit": "abc1234", "dirty": True}


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs git and a checkout")
def test_without_a_named_commit_the_checkout_is_asked(monkeypatch):
    monkeypatch.delenv("OEA_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert git_commit(str(REPO))["commit"] == head
