"""Stats: traffic counted from plans (closed form), the recorder and its snapshot."""
import pytest

from collectives.algorithms import plan_for
from collectives.stats import AlgorithmStats, StatsRecorder, native_traffic, plan_traffic


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("count", [60 * 1001, 7, 0])
def test_ring_traffic_is_the_closed_form(size, count):
    total_sent = total_received = 0
    for rank in range(size):
        sent, received = plan_traffic(plan_for("allreduce", "ring", rank, size, count, 4, None))
        total_sent += sent
        total_received += received
        if count % size == 0:
            assert sent == received == 2 * (size - 1) * count // size
    assert total_sent == total_received == 2 * (size - 1) * count  # every chunk p-1 times, twice


def test_recorder_totals_snapshot_and_reset():
    recorder = StatsRecorder()
    recorder.record("ring", 0.5, 100, 90)
    recorder.record("ring", 0.25, 100, 90)
    recorder.record("native", 1.0, 8, 8, modelled=True)
    stats = recorder.snapshot()
    assert stats["ring"] == AlgorithmStats(calls=2, seconds=0.75, bytes_sent=200, bytes_received=180)
    assert stats["native"].modelled and not stats["ring"].modelled
    assert (stats.calls, stats.bytes_sent, stats.bytes_received) == (3, 208, 188)
    assert "native (model)" in str(stats) and "total" in str(stats)
    with pytest.raises(KeyError, match="ran: \\['native', 'ring'\\]"):
        stats["torus2d"]
    recorder.reset()
    assert len(recorder.snapshot()) == 0 and len(stats) == 2  # a snapshot does not change


def test_native_traffic_model():
    assert native_traffic(1000, 1) == 0
    assert native_traffic(1000, 2) == 1000
    assert native_traffic(1000, 4) == 1500
