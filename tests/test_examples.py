"""Smoke tests of examples/: each main() runs a few steps, with and without tqdm/matplotlib."""

import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the examples set their own thread count


@pytest.fixture(params=["with-extras", "bare"])
def extras(request, monkeypatch):
    """'bare' hides tqdm and matplotlib, as on a machine without them; the value says whether a plot is due."""
    if request.param == "bare":
        for name in ("tqdm", "matplotlib", "matplotlib.pyplot"):
            monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
        return False
    # the examples write a plot exactly when matplotlib imports; tqdm only changes the progress output
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def check_plot(result, out, extras):
    if extras:
        assert result["plot"] is not None and Path(result["plot"]).stat().st_size > 0
        assert Path(result["plot"]).parent == out
    else:
        assert result["plot"] is None
        assert not out.exists() or not list(out.iterdir())


def test_digits(examples_path, extras, tmp_path, capsys):
    pytest.importorskip("sklearn")
    import digits

    out = tmp_path / "out"
    result = digits.main(["--epochs", "1", "--steps", "3", "--hidden", "16", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "FusedLSTM: test accuracy" in printed and "nn.LSTM: test accuracy" in printed
    f, r = result["FusedLSTM"], result["nn.LSTM"]
    assert len(f["losses"]) == len(r["losses"]) == 3
    # same init, same batches: the two runs agree step by step
    assert f["losses"] == pytest.approx(r["losses"], rel=1e-4)
    assert 0 <= f["accuracy"] <= 1
    check_plot(result, out, extras)


def test_adding(examples_path, extras, tmp_path, capsys):
    import adding

    out = tmp_path / "out"
    result = adding.main(["--steps", "3", "--length", "20", "--hidden", "16", "--batch", "8",
                          "--test-size", "32", "--eval-every", "2", "--out", str(out)])
    assert "final held-out MSE" in capsys.readouterr().out
    assert result["steps"] == 3 and [s for s, _ in result["curve"]] == [0, 2, 3]
    assert result["final_mse"] > 0
    check_plot(result, out, extras)


def test_adding_batches(examples_path):
    import adding

    x, y = adding.make_batch(5, 10, torch.Generator().manual_seed(0))
    assert x.shape == (5, 10, 2) and y.shape == (5,)
    marker = x[..., 1]
    assert (marker.sum(1) == 2).all()
    assert (marker[:, :5].sum(1) == 1).all()  # one marker in each half
    assert torch.allclose((x[..., 0] * marker).sum(1), y)


def test_sentiment(examples_path, extras, tmp_path, capsys):
    import sentiment

    out = tmp_path / "out"
    result = sentiment.main(["--epochs", "1", "--steps", "3", "--train-size", "64",
                             "--test-size", "32", "--hidden", "8", "--embed", "8",
                             "--out", str(out)])
    assert "test accuracy" in capsys.readouterr().out
    assert len(result["history"]) == 1 and 0 <= result["accuracy"] <= 1
    check_plot(result, out, extras)


def test_episodic_memory(examples_path, extras, tmp_path, capsys):
    import episodic_memory

    out = tmp_path / "out"
    result = episodic_memory.main(["--updates", "3", "--chunk", "12", "--batch", "4",
                                   "--hidden", "8", "--test-batch", "4", "--test-length", "40",
                                   "--eval-every", "2", "--timing-reps", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "held-out accuracy with resets:" in printed and "step-at-a-time loop" in printed
    for name in ("with resets", "without resets"):
        run = result[name]
        assert len(run["losses"]) == 3 and [s for s, _ in run["curve"]] == [0, 2, 3]
        assert 0 <= run["accuracy"] <= 1
    # the one call and the step-at-a-time loop compute the same loss and gradients
    timing = result["timing"]
    assert timing["one call"] > 0 and timing["step loop"] > 0 and timing["difference"] < 1e-5
    check_plot(result, out, extras)


def test_episodic_memory_streams(examples_path):
    from episodic_memory import make_streams

    cues, noise = 3, 2
    x, reset, y = make_streams(6, 300, cues, 2, 7, noise, 0.3, torch.Generator().manual_seed(0))
    assert x.shape == (300, 6, cues + noise) and reset.shape == y.shape == (300, 6)
    assert reset.dtype == torch.bool and y.dtype == torch.int64
    assert reset[0].all()  # every stream starts with an episode
    cue = x[..., :cues]
    assert (cue[~reset] == 0).all()  # the cue shows at an episode's first step only
    assert (x[..., cues:].std() - 1).abs() < 0.1  # noise channels at every step
    blank_episodes = cued_episodes = 0
    for b in range(6):
        starts = reset[:, b].nonzero().flatten().tolist()
        gaps = [e - s for s, e in zip(starts, starts[1:])]
        assert all(2 <= g <= 7 for g in gaps) and 300 - starts[-1] <= 7
        current = None
        for t in range(300):
            if reset[t, b]:  # a new episode: one-hot cue, or nothing shown (answer `cues`)
                shown = cue[t, b]
                assert sorted(shown.tolist()) in ([0.0] * cues, [0.0] * (cues - 1) + [1.0])
                current = int(shown.argmax()) if shown.any() else cues
                blank_episodes += current == cues
                cued_episodes += current != cues
            assert y[t, b] == current  # the answer is the cue of the current episode
    assert blank_episodes > 0.15 * (blank_episodes + cued_episodes)
    assert cued_episodes > 0.55 * (blank_episodes + cued_episodes)

    # fixed-length episodes: resets exactly every 4 steps; no blank episodes when blank=0
    x, reset, y = make_streams(3, 20, cues, 4, 4, noise, 0.0, torch.Generator().manual_seed(1))
    expected = (torch.arange(20) % 4 == 0).unsqueeze(1).expand(20, 3)
    assert torch.equal(reset, expected)
    assert (x[reset][:, :cues].sum(-1) == 1).all() and (y < cues).all()
    assert torch.equal(y, y[::4].repeat_interleave(4, dim=0))


def test_layernorm_zoneout(examples_path, extras, tmp_path, capsys):
    import layernorm_zoneout

    out = tmp_path / "out"
    result = layernorm_zoneout.main(["--steps", "3", "--train-chars", "2000", "--val-chars", "500",
                                     "--hidden", "8", "--embed", "8", "--seq", "20",
                                     "--batch", "4", "--eval-every", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "final validation loss" in printed and "layer_norm=True" in printed
    assert result["names"] == {"plain": "plain LSTM",
                               "variant": "LayerNorm+zoneout+rec. dropout"}
    for name in ("plain", "variant"):
        run = result[name]
        assert len(run["losses"]) == 3 and [s for s, _, _ in run["curve"]] == [0, 2, 3]
        assert 0 < run["train"] < 10 and 0 < run["val"] < 10
        assert run["best_val"] == min(v for _, _, v in run["curve"])
    check_plot(result, out, extras)


def test_layernorm_zoneout_text(examples_path):
    import random

    from layernorm_zoneout import VERBS, make_text, sentence

    text = make_text(3000, seed=5)
    assert len(text) == 3000 and text == make_text(3000, seed=5)  # deterministic
    assert text != make_text(3000, seed=6)
    singular = {s for s, _ in VERBS}
    plural = {p for _, p in VERBS}
    rng = random.Random(0)
    for _ in range(200):
        words = sentence(rng).split()
        assert words[-1] == "." and words.count("(") == words.count(")")
        # the main verb (the first verb not inside a relative clause) agrees with the subject
        if "that" in words:
            continue
        verb = next(w for w in words if w in singular or w in plural)
        noun = words[words.index(verb) - 1]
        assert (verb in plural) == (noun.endswith("s") or noun == "children")
