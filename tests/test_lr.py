"""Linear learning-rate scaling with gradual warmup (Goyal et al. 2017), and its torch scheduler."""
import pytest

from collectives.lr import scaled_learning_rate, scaled_lr_scheduler


def test_warmup_rises_linearly_from_the_base_rate_to_the_scaled_one():
    rates = [scaled_learning_rate(s, base_lr=0.1, batch=8192, base_batch=256, warmup_steps=4)
             for s in range(7)]
    assert rates == pytest.approx([0.1, 0.875, 1.65, 2.425, 3.2, 3.2, 3.2])


def test_without_warmup_the_rate_is_scaled_at_once():
    assert scaled_learning_rate(0, base_lr=0.2, batch=64, base_batch=256) == pytest.approx(0.05)


@pytest.mark.parametrize("arguments, message", [
    (dict(step=-1), "step must be an int >= 0, got -1"),
    (dict(base_lr=0.0), "base_lr must be > 0"),
    (dict(batch=0), "batch must be an int >= 1, got 0"),
    (dict(base_batch=2.5), "base_batch must be an int >= 1, got 2.5"),
    (dict(warmup_steps=-3), "warmup_steps must be an int >= 0, got -3"),
])
def test_arguments_are_checked(arguments, message):
    given = dict(step=0, base_lr=0.1, batch=512, base_batch=256, warmup_steps=2) | arguments
    with pytest.raises(ValueError, match=message):
        scaled_learning_rate(given.pop("step"), **given)


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
