"""Linear learning-rate scaling with gradual warmup (Goyal et al. 2017), and its torch scheduler."""
import numpy as np
import pytest

from collectives.lr import scaled_learning_rate, scaled_lr_scheduler


def test_warmup_rises_linearly_from_the_base_rate_to_the_scaled_one():
    rates = [scaled_learning_rate(s, base_lr=0.1, batch=8192, base_batch=256, warmup_steps=4)
             for s in range(7)]
    assert rates == pytest.approx([0.1, 0.875, 1.65, 2.425, 3.2, 3.2, 3.2])


def test_without_warmup_the_rate_is_scaled_at_once():
    assert scaled_learning_rate(0, base_lr=0.2, batch=64, base_batch=256) == pytest.approx(0.05)


@pytest.mark.parametrize("arguments, message", [
    (dict(step=-1), r"step must be an int in \[0, 2\*\*63\), got -1"),
    (dict(base_lr=0.0), "base_lr must be a finite number > 0"),
    (dict(batch=0), r"batch must be an int in \[1, 2\*\*63\), got 0"),
    (dict(base_batch=2.5), r"base_batch must be an int in \[1, 2\*\*63\), got 2.5"),
    (dict(warmup_steps=-3), r"warmup_steps must be an int in \[0, 2\*\*63\), got -3"),
    # the twenty-third review: inf came back, True was 2.0, 1e308 scaled to inf, 0.0 came
    # back, bare OverflowError and TypeError, an array's "truth value is ambiguous"
    (dict(base_lr=float("inf")), "base_lr must be a finite number > 0, got inf"),
    (dict(base_lr=float("nan")), "base_lr must be a finite number > 0, got nan"),
    (dict(base_lr=True), "base_lr must be a finite number > 0, got True"),
    (dict(base_lr="0.1"), "base_lr must be a finite number > 0, got '0.1'"),
    (dict(base_lr=np.ones(2)), "base_lr must be a finite number > 0"),
    (dict(base_lr=10**400), "base_lr must be a finite number > 0"),
    (dict(base_lr=1e308, warmup_steps=0), "gives inf: not a finite rate > 0"),
    (dict(base_batch=10**400), r"base_batch must be an int in \[1, 2\*\*63\)"),
    (dict(batch=10**400), r"batch must be an int in \[1, 2\*\*63\)"),
    (dict(warmup_steps=10**400), r"warmup_steps must be an int in \[0, 2\*\*63\)"),
])
def test_arguments_are_checked(arguments, message):
    given = dict(step=0, base_lr=0.1, batch=512, base_batch=256, warmup_steps=2) | arguments
    with pytest.raises(ValueError, match=message):
        scaled_learning_rate(given.pop("step"), **given)


def test_numpy_counts_are_counts():
    """np.int64 steps and batches were refused ("must be an int"), unlike elsewhere."""
    assert scaled_learning_rate(np.int64(3), base_lr=np.float32(0.25), batch=np.int64(512),
                                base_batch=256, warmup_steps=np.int64(2)) == 0.5


def test_torch_scheduler_follows_the_function_per_parameter_group():
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")
    weights, bias = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [weights], "lr": 0.1},
                                 {"params": [bias], "lr": 0.01}], lr=0.1)
    scheduler = scaled_lr_scheduler(optimizer, batch=1024, base_batch=256, warmup_steps=3)
    seen = []
    for _ in range(5):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, (lr, lr_bias) in enumerate(seen):
        assert lr == pytest.approx(scaled_learning_rate(
            step, base_lr=0.1, batch=1024, base_batch=256, warmup_steps=3))
        assert lr_bias == pytest.approx(lr / 10)
