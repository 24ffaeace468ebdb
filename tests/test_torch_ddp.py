"""fastrnn.torch modules under torch.nn.parallel.DistributedDataParallel (gloo, 2 processes)."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

import fastrnn.torch as ft  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this torch build")

WORLD = 2


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        f64 = dict(dtype=torch.float64)  # explicit: the spawned processes start with torch's default dtype
        self.rnn = nn.LSTM(3, 8, num_layers=2, batch_first=True, **f64)
        self.cell = nn.GRUCell(8, 4, **f64)
        self.head = nn.Linear(4, 1, **f64)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(self.cell(out[:, -1]))


def _model_and_data():
    torch.manual_seed(0)
    model = ft.convert(Model())
    x = torch.randn(8, 6, 3, dtype=torch.float64)
    y = torch.randn(8, 1, dtype=torch.float64)
    return model, x, y


def _step(model, x, y):
    loss = nn.functional.mse_loss(model(x), y)  # mean over the batch: DDP averages it over ranks
    loss.backward()


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model, x, y = _model_and_data()
        ddp = nn.parallel.DistributedDataParallel(model)
        per = x.shape[0] // WORLD
        _step(ddp, x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per])
        torch.save({n: p.grad for n, p in model.named_parameters()}, os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_processes_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    model, x, y = _model_and_data()
    assert type(model.rnn) is ft.LSTM
    _step(model, x, y)
    want = {n: p.grad for n, p in model.named_parameters()}
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"grads{rank}.pt")
        assert got.keys() == want.keys()
        for n in want:
            torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=f"rank {rank}: {n}")
