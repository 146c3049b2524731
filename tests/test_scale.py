"""Scale-out building blocks, in one CPU process: device and precision settings, the network's
pool-before-ReLU order, per-clip dropout, a job of one process, sharding, the read-only cache
and the ``cache`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audiogate.cli import main
from audiogate.config import Config
from audiogate.data.prepare import open_cache, prepare_data
from audiogate.errors import ConfigError, DataError
from audiogate.models import ModelSpec, SimpleConvNet
from audiogate.models.dropout import ClipDropout, clip_seeds
from audiogate.training.device import Precision, resolve_device, to_cpu
from audiogate.training.distributed import Dist

from .conftest import make_toy_dataset

CUDA = torch.cuda.is_available()


# ------------------------------------------------------------------ config and device
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_values_accepted(device: str) -> None:
    assert Config(device=device).device == device


@pytest.mark.parametrize(("field", "value"), [("device", "gpu"), ("device", "cuda:"),
                                              ("device", "cuda:x"), ("device", "CPU"),
                                              ("precision", "16"), ("precision", "bf16"),
                                              ("precision", "64")])
def test_bad_device_or_precision_names_the_field(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'"):
        Config(**{field: value})


def test_auto_and_cpu_resolve_here() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if CUDA else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(CUDA, reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_says_what_to_do(name: str) -> None:
    with pytest.raises(ConfigError, match="--device cpu"):
        resolve_device(name)


def test_sixteen_bit_mixed_precision_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="bf16-mixed"):
        Precision("16-mixed", torch.device("cpu"))


def test_bf16_autocast_on_the_cpu_runs_the_network_in_bfloat16() -> None:
    net = nn.Linear(8, 3)
    x = torch.randn(4, 8)
    with Precision("bf16-mixed", torch.device("cpu")).autocast():
        assert net(x).dtype == torch.bfloat16
    with Precision("32", torch.device("cpu")).autocast():
        assert net(x).dtype == torch.float32


def test_precision_step_trains_and_has_no_scaler_state_without_fp16() -> None:
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    precision = Precision("bf16-mixed", torch.device("cpu"))
    before = net.weight.detach().clone()
    with precision.autocast():
        loss = net(torch.ones(3, 2)).float().square().mean()
    precision.step(loss, opt)
    assert not torch.equal(before, net.weight)
    assert precision.state_dict() == {}


def test_to_cpu_moves_nested_tensors_and_keeps_the_rest() -> None:
    tree = {"a": [torch.ones(2, requires_grad=True), 3], "b": ("x", {"c": torch.zeros(1)})}
    out = to_cpu(tree)
    assert out["a"][1] == 3 and out["b"][0] == "x"
    assert not out["a"][0].requires_grad and out["a"][0].device.type == "cpu"
    assert isinstance(out["b"], tuple)


# ------------------------------------------------------------------ the network
def _spec_order_forward(net: SimpleConvNet, x: torch.Tensor) -> torch.Tensor:
    """The specification's Conv-ReLU-MaxPool order."""
    x = x[..., None].permute(0, 3, 1, 2)
    x = net.pool(net.relu(net.conv1(x)))
    x = net.pool(net.relu(net.conv2(x)))
    return net.fc(torch.flatten(net.dropout(x), 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_before_relu_gives_the_same_outputs_and_gradients(seed: int) -> None:
    """Max-pool and ReLU commute (ReLU is monotone): the reordered network is the
    specification's network, output for output and gradient for gradient."""
    torch.manual_seed(seed)
    net = SimpleConvNet(n_mels=16, n_frames=24, n_classes=3, dropout=0.0)
    x = torch.randn(5, 16, 24) * 3
    ours = net(x)
    grads = torch.autograd.grad(ours.square().sum(), list(net.parameters()))
    spec = _spec_order_forward(net, x)
    spec_grads = torch.autograd.grad(spec.square().sum(), list(net.parameters()))
    assert torch.equal(ours, spec)
    for a, b in zip(grads, spec_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_clip_dropout_masks_follow_the_clip_not_the_batch() -> None:
    drop = ClipDropout(0.5).train()
    x = torch.ones(6, 4, 5)
    seeds = np.arange(100, 106, dtype=np.uint64)
    with clip_seeds(seeds):
        whole = drop(x)
    with clip_seeds(seeds[:3]):
        first = drop(x[:3])
    with clip_seeds(seeds[3:]):
        second = drop(x[3:])
    assert torch.equal(whole, torch.cat([first, second]))
    assert set(torch.unique(whole).tolist()) == {0.0, 2.0}  # kept ones scaled by 1 / (1 - p)
    assert not torch.equal(whole[0], whole[1])  # each clip has its own mask
    with clip_seeds(seeds):
        assert torch.equal(drop(x), whole)  # same seeds, same masks


def test_clip_dropout_without_seeds_or_in_eval_is_plain_dropout() -> None:
    drop = ClipDropout(0.3)
    x = torch.randn(4, 10)
    assert torch.equal(drop.eval()(x), x)
    torch.manual_seed(0)
    plain = nn.Dropout(0.3).train()(x)
    torch.manual_seed(0)
    assert torch.equal(drop.train()(x), plain)
    with clip_seeds(np.arange(3)), pytest.raises(ValueError, match="3 seeds for a batch of 4"):
        drop(x)


def test_simple_network_uses_clip_dropout_and_keeps_its_weights() -> None:
    net = ModelSpec.of(Config(model="simple"), n_classes=2).build()
    assert isinstance(net.dropout, ClipDropout) and net.dropout.p == 0.3
    assert sorted(net.state_dict()) == ["conv1.bias", "conv1.weight", "conv2.bias",
                                        "conv2.weight", "fc.bias", "fc.weight"]


# ------------------------------------------------------------------ one process, shards
def test_a_job_of_one_is_a_no_op() -> None:
    one = Dist()
    assert one.is_main and not one.active
    rows = np.arange(7)
    assert one.shard(rows) is rows
    assert one.broadcast("x") == "x" and one.gather(3) == [3]
    assert one.any(True) and not one.any(False) and one.first(None) is None
    net = nn.Linear(1, 1)
    assert one.wrap(net, torch.device("cpu")) is net
    one.barrier()


@pytest.mark.parametrize(("n", "world"), [(32, 2), (9, 2), (5, 4), (1, 2), (7, 3)])
def test_shards_cover_a_batch_once_in_order(n: int, world: int) -> None:
    rows = np.arange(100, 100 + n)
    parts = [Dist(rank=r, world_size=world).shard(rows) for r in range(world)]
    np.testing.assert_array_equal(np.concatenate(parts), rows)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ------------------------------------------------------------------ cache
def test_read_only_cache_reads_what_was_filled_and_writes_nothing(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "dataset", n_per_class=12)
    config = Config(data=str(data), runs_dir=str(tmp_path / "runs"), fixed_length=32,
                    n_fft=512, workers=1)
    with pytest.raises(DataError, match="not found"):
        open_cache(config, read_only=True)
    filled = prepare_data(config, progress=False)
    files = sorted(p.name for p in config.cache_path().rglob("*"))
    again = prepare_data(config, split=filled.split, classes=filled.classes, progress=False,
                         read_only=True)
    assert sorted(p.name for p in config.cache_path().rglob("*")) == files
    rows = np.arange(len(filled.train))
    np.testing.assert_array_equal(again.train.waves(rows), filled.train.waves(rows))
    np.testing.assert_array_equal(again.val.feature_matrix(), filled.val.feature_matrix())
    make_toy_dataset(tmp_path / "more", n_per_class=3, seed=9)
    other = Config(data=str(tmp_path / "more"), runs_dir=config.runs_dir, fixed_length=32,
                   n_fft=512, workers=1)
    with pytest.raises(DataError, match="not in the feature cache"):
        prepare_data(other, read_only=True, progress=False)


def test_cache_command_fills_the_cache_training_then_reuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_toy_dataset(tmp_path / "dataset", n_per_class=12)
    flags = ["--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--fixed-length", "32",
             "--n-fft", "512", "--workers", "1"]
    assert main(["-q", "cache", *flags]) == 0
    out = capsys.readouterr().out
    assert "cache: " in out and "split train" in out
    config = Config(data=str(data), runs_dir=str(tmp_path / "runs"), fixed_length=32,
                    n_fft=512, workers=1)
    # everything is there: a read-only look-up of the whole folder succeeds
    ready = prepare_data(config, read_only=True, progress=False)
    assert len(ready.train) + len(ready.val) + len(ready.test) == 24
    assert main(["-q", "cache", *flags, "--no-cache"]) == 2
    assert main(["-q", "cache", *flags, "--fixed-length", "auto"]) == 0  # train's window
