"""Multi-process search through torchrun: 2 CPU processes on gloo (DistributedDataParallel)."""
import json
import os
import socket
import subprocess
import sys

import torch


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_search(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "trilevelnas.search", "--preset", "smoke", "--no-progress",
           "--set", "pretrain.steps=2", "--set", "search.steps=3", "--set", "train.steps=2",
           "--set", "data.val_max_images=1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    arch = json.loads((out / "arch.json").read_text())
    assert arch["channels"] == 8
    assert (out / "model.pt").is_file() and (out / "log.csv").is_file()
    # rank 0 alone wrote the summary table
    assert proc.stdout.count("GFLOPs (256x256 LR)") == 1
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["loop"]["done"] == ["pretrain", "search", "train"]
