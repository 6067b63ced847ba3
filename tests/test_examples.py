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
