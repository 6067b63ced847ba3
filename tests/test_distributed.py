"""FusedLSTM under DistributedDataParallel (gloo, 2 processes on this machine)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fused_lstm import FusedLSTM

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available")

WORLD = 2
STEPS = 4
LR = 0.5


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = FusedLSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True,
                              dtype=torch.float64)
        self.head = nn.Linear(10, 1, dtype=torch.float64)

    def forward(self, x):
        y, (h_n, _) = self.lstm(x)
        return self.head(y[:, -1]) + h_n.sum(0).mean(-1, keepdim=True)


def train(model, x, target, steps):
    """Plain SGD on the mean squared error over the batch it is given."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _worker(rank, init_file, data_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        data = torch.load(data_file)
        model = Model()
        model.load_state_dict(data["init"])
        ddp = nn.parallel.DistributedDataParallel(model)
        half = data["x"].shape[0] // WORLD
        rows = slice(rank * half, (rank + 1) * half)  # each rank gets half of the batch
        losses = train(ddp, data["x"][rows], data["target"][rows], STEPS)
        # Saved under a temporary name first, so the file exists only once complete.
        path = os.path.join(out_dir, f"rank{rank}.pt")
        torch.save({"state": model.state_dict(), "losses": losses}, path + ".part")
        os.replace(path + ".part", path)
        # Leave together: a rank tearing down gloo while its peer is still using the
        # connection aborts the peer ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_matches_single_process(tmp_path):
    torch.manual_seed(0)
    model = Model()
    x = torch.randn(8, 6, 3, dtype=torch.float64)
    target = torch.randn(8, 1, dtype=torch.float64)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    data_file = str(tmp_path / "data.pt")
    torch.save({"init": init, "x": x, "target": target}, data_file)

    try:
        mp.spawn(_worker, args=(str(tmp_path / "init"), data_file, str(tmp_path)),
                 nprocs=WORLD, join=True)
    except mp.ProcessExitedException as e:
        # Even after the barrier, gloo sometimes aborts a rank while the contexts are torn
        # down (a known gloo shutdown race: a barrier followed by context destruction).
        # Every rank has then finished training and saved its results, which is what
        # this test checks; any other failure, or a rank without results, still fails it.
        saved = all((tmp_path / f"rank{r}.pt").exists() for r in range(WORLD))
        if e.signal_name != "SIGABRT" or not saved:
            raise

    # DDP averages the ranks' gradients of their half-batch means: that is the gradient of
    # the mean over the whole batch, so one process trains on all of it with the mean loss.
    losses = train(model, x, target, STEPS)
    want = model.state_dict()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert losses[-1] < losses[0]
    for name, value in want.items():
        assert not torch.equal(value, init[name]), f"{name} did not train"
        for r, res in enumerate(results):
            torch.testing.assert_close(res["state"][name], value, rtol=1e-10, atol=1e-12,
                                       msg=lambda m: f"rank {r}, {name}: {m}")
    # the ranks' own losses average to the single-process loss at every step
    for step in range(STEPS):
        mean = sum(res["losses"][step] for res in results) / WORLD
        assert abs(mean - losses[step]) <= 1e-10 * max(1.0, abs(losses[step]))
