"""Argument checks, option typos and settings, in one process (no MPI needed)."""
import re

import numpy as np
import pytest

from collectives.config import Settings
from collectives.errors import rank_list, unknown_choice
from collectives.options import CallOptions, Op, check_algorithm
from collectives.validation import check_array, check_out, check_outs, overlaps_itself


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3, "x", None, memoryview(b"ab")])
def test_non_arrays_are_rejected_by_type(bad):
    with pytest.raises(TypeError, match="x must be a NumPy or CuPy array, got"):
        check_array(bad)


@pytest.mark.parametrize("scalar", [1.5, 2, np.float32(1.5), np.int64(2), (1.0,)])
def test_scalars_and_sequences_are_told_how_to_pass(scalar):
    with pytest.raises(TypeError, match=r"got .*\(wrap it with np.asarray\)$"):
        check_array(scalar)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.bool_, np.object_, np.int8,
                                   np.uint32, np.float128 if hasattr(np, "float128") else np.int16])
def test_unsupported_dtypes_name_themselves_and_the_supported_ones(dtype):
    with pytest.raises(TypeError, match=rf"^x: unsupported dtype {np.dtype(dtype)}; supported: "
                                        r"float16, bfloat16, float32, float64, int32, int64"):
        check_array(np.zeros(3, dtype))
    with pytest.raises(TypeError, match=r"^arrays\[3\]: unsupported dtype"):  # (which one)
        check_array(np.zeros(3, dtype), "arrays[3]")


def test_supported_arrays_pass_in_any_layout():
    check_array(np.zeros((4, 6), np.float32, order="F")[::2])
    check_array(np.zeros((), np.int64))


@pytest.mark.parametrize("text, suggestion", [("smu", "sum"), ("mx", "max"), ("AVG ", None)])
def test_op_typos_suggest_the_closest(text, suggestion):
    with pytest.raises(ValueError, match=f"unknown op {text!r}; accepted: 'sum', 'avg', 'max', 'min'") as info:
        Op.parse(text)
    assert (f"did you mean {suggestion!r}?" in str(info.value)) == (suggestion is not None)


def test_algorithm_typo_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown algorithm 'rign'.*did you mean 'ring'\?"):
        check_algorithm("rign")


def test_compression_typo_suggests_the_closest():
    from collectives.compression import codec_for
    with pytest.raises(ValueError, match=r"unknown compression 'fp61'.*did you mean 'fp16'\?"):
        codec_for("fp61", np.dtype(np.float32))


def test_unknown_choice_without_a_close_match_lists_the_choices():
    error = unknown_choice("compression", "zstd", [None, "fp16", "bf16"])
    assert str(error) == "unknown compression 'zstd'; accepted: None, 'fp16', 'bf16'"


def test_out_must_match_type_shape_and_dtype(tmp_path):
    x = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="out must be a numpy array like x, got builtins.list"):
        check_out([0.0] * 4, x)
    with pytest.raises(TypeError, match="got numpy.ma.MaskedArray"):
        check_out(np.ma.zeros(4, np.float32), x)
    mapped = np.memmap(tmp_path / "x", np.float32, "w+", shape=(4,))
    check_out(np.zeros(4, np.float32), mapped)  # a subclass is a NumPy array like any
    check_out(mapped, x)
    with pytest.raises(ValueError, match=r"expected shape \(4,\) dtype float32, got shape \(5,\)"):
        check_out(np.zeros(5, np.float32), x)
    with pytest.raises(ValueError, match="got shape \\(4,\\) dtype float64"):
        check_out(np.zeros(4, np.float64), x)
    check_out(np.zeros(4, np.float32), x)


def test_out_read_only_and_in_place_on_read_only_x():
    x = np.zeros(4, np.float32)
    out = np.zeros(4, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        check_out(out, x)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="out is x but x is read-only"):
        check_out(x, x)


@pytest.mark.parametrize("window, message", [
    (slice(2, 10), "out overlaps x partially; pass out=x"),
    (slice(1, 9), "out overlaps x partially; pass out=x"),
    # the same elements through another view object: was "overlaps x partially"
    (slice(0, 8, 1), "out is another view of exactly x's memory, not x itself"),
])
def test_out_sharing_memory_with_x_is_rejected(window, message):
    buffer = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_out(buffer[window], buffer[:8])


def test_an_equal_view_in_a_list_names_the_array():
    a = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=re.escape("out[1] is another view of exactly "
                                                   "arrays[1]'s memory")):
        check_outs([np.zeros(2, np.float32), a[::2]], [np.zeros(2, np.float32), a[::2]])


def test_out_is_x_is_in_place():
    x = np.zeros(4, np.float32)
    check_out(x, x)


def test_rank_list_compresses_runs():
    assert rank_list([2]) == "rank 2"
    assert rank_list([0, 1]) == "ranks 0-1"
    assert rank_list([5, 0, 1, 2, 7, 9, 8]) == "ranks 0-2, 5, 7-9"


@pytest.mark.parametrize("raw, expected", [("0", False), ("off", False), ("1", True), ("", True)])
def test_check_setting_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("COLLECTIVES_CHECK", raw)
    assert Settings.resolve().check is expected
    assert Settings.resolve(check=not expected).check is (not expected)
    assert Settings.resolve(check=np.bool_(not expected)).check is (not expected)


@pytest.mark.parametrize("bad", ["no", "0", 0, 1, "False"])
def test_check_argument_must_be_a_bool(bad):
    with pytest.raises(TypeError, match=f"check must be True, False or None .*got {bad!r}"):
        Settings.resolve(check=bad)  # ("no" is truthy: the check stayed on, silently)


@pytest.mark.parametrize("raw", ["soon", "nan", "NaN", "inf", "-inf", "0", "-1", "1e10", ""])
def test_timeout_must_be_finite_and_positive(monkeypatch, raw):
    """nan or inf would disable every deadline, 1e10 s broke close() (thread joins refuse
    it) and, as COLLECTIVES_ABORT_GRACE, abort(): refused by name, as argument and variable."""
    monkeypatch.setenv("COLLECTIVES_TIMEOUT", raw)
    if raw == "":  # unset: the default
        assert Settings.resolve().timeout == 300.0
        return
    with pytest.raises(ValueError, match=rf"COLLECTIVES_TIMEOUT={raw!r} is not a valid number "
                                         r"of seconds \(> 0, at most 1e\+07\)"):
        Settings.resolve()
    monkeypatch.delenv("COLLECTIVES_TIMEOUT")
    with pytest.raises(ValueError, match=r"timeout=.* is not a valid number of seconds"):
        Settings.resolve(timeout=float(raw) if raw != "soon" else raw)


def test_timeout_setting_is_read(monkeypatch):
    monkeypatch.setenv("COLLECTIVES_TIMEOUT", "2.5")
    assert Settings.resolve().timeout == 2.5
    assert Settings.resolve(timeout=7).timeout == 7


def test_masked_arrays_are_refused_not_unmasked():
    with pytest.raises(TypeError, match="x is a masked array: its mask would be ignored"):
        check_array(np.ma.masked_array(np.zeros(3, np.float32), mask=[1, 0, 0]))


def test_np_matrix_is_refused_as_x_and_as_out():
    """np.matrix stays 2-D through reshape(-1): plans sliced the wrong axis and the ranks'
    messages differed in size (a truncation error, a broken communicator)."""
    row = np.zeros((1, 3), np.float32)
    with pytest.raises(TypeError, match=r"x is an np.matrix, which stays 2-D when flattened"):
        check_array(np.asmatrix(row))
    with pytest.raises(TypeError, match="out must be a numpy array like x, got numpy.matrix"):
        check_out(np.asmatrix(np.empty((1, 3), np.float32)), row)


def test_a_read_only_x_in_place_names_no_collective():
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="x is read-only; a call in place needs a writable"):
        check_out(frozen, frozen)


def test_outs_that_cross_or_overlap_other_arrays_are_refused():
    a, b = np.zeros(8, np.float32), np.ones(8, np.float32)
    with pytest.raises(ValueError, match=r"arrays\[1\] and out\[0\] share memory"):
        check_outs((b, a), (a, b))
    shared = np.zeros(20, np.float32)
    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] share memory"):
        check_outs((shared[:8], shared[4:12]), (a, b))
    check_outs((a, b), (a, b))  # each in place
    interleaved = np.zeros(16, np.float32)  # extents meet, memory does not
    check_outs((interleaved[::2], interleaved[1::2]), (a, b))
    check_outs((np.empty(8, np.float32), np.empty(8, np.float32)), (a, a))  # inputs may alias


def test_one_clash_among_thousands_of_arrays_is_found():
    """The sorted extents tell at once that none meet; one that does is still named."""
    grads = np.zeros(4000, np.float32)
    arrays = [grads[i * 4:(i + 1) * 4] for i in range(1000)]
    check_outs(arrays, arrays)  # in place, side by side: fine
    outs = [np.empty(4, np.float32) for _ in arrays]
    check_outs(outs, arrays)
    outs[700] = grads[22:26]  # half of arrays[5], half of arrays[6]
    with pytest.raises(ValueError, match=r"arrays\[5\] and out\[700\] share memory"):
        check_outs(outs, arrays)
    outs[700] = outs[3][::-1]  # another out's memory, backwards
    with pytest.raises(ValueError, match=r"out\[3\] and out\[700\] share memory"):
        check_outs(outs, arrays)


def test_arrays_whose_elements_meet_are_told_apart_from_strided_views():
    base = np.zeros(24, np.float32)
    own = [base, base[::3], base[::-2], base.reshape(4, 6).T, base.reshape(2, 3, 4)[:, ::2, 1:],
           np.asfortranarray(base.reshape(4, 6)), base[:1], base[:0],
           np.lib.stride_tricks.as_strided(base, shape=(2, 2), strides=(16, 8))]
    shared = [np.lib.stride_tricks.as_strided(base, shape=(4,), strides=(0,)),
              np.lib.stride_tricks.as_strided(base, shape=(3, 4), strides=(4, 4)),
              np.lib.stride_tricks.sliding_window_view(base, 5)]
    assert [overlaps_itself(a) for a in own] == [False] * len(own)
    assert [overlaps_itself(a) for a in shared] == [True] * len(shared)


def test_an_out_whose_elements_share_memory_is_refused():
    """Found by the ninth review: every element held the last one's sum."""
    x = np.arange(4, dtype=np.float32)
    stride0 = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(4,), strides=(0,))
    with pytest.raises(ValueError, match=r"out has elements that may share memory \(strides \(0,\)"):
        check_out(stride0, x)
    with pytest.raises(ValueError, match="x has elements that may share memory"):
        check_out(stride0, stride0)  # in place
    with pytest.raises(ValueError, match=r"out\[1\] has elements that may share memory"):
        check_outs([np.empty(4, np.float32), stride0], [x, x.copy()])
    check_out(np.empty(8, np.float32)[::2], x)  # strided, each element its own


def test_mixed_in_place_and_separate_outs_name_the_lowest_bad_out():
    """In place outs that are writable and C-contiguous skip their per-array check; any
    other in place out is still checked, in index order with the separate ones."""
    a, b, c = (np.zeros(4, np.float32) for _ in range(3))
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    stride0 = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(4,), strides=(0,))
    wrong = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"out\[2\] must have the result's shape and dtype"):
        check_outs([a, b, wrong], [a, b, c])
    with pytest.raises(ValueError, match=r"out\[0\] is x but x is read-only"):
        check_outs([frozen, b, wrong], [frozen, b, c])
    with pytest.raises(ValueError, match=r"arrays\[1\] has elements that may share memory"):
        check_outs([a, stride0, wrong], [a, stride0, c])
    strided = np.zeros(8, np.float32)[::2]  # in place, not contiguous, each element its own
    check_outs([a, strided, np.zeros(4, np.float32)], [a, strided, c])


def test_outs_checked_in_order_before_their_count_is():
    """check_outs checks each out it pairs before anything else (the caller compares the
    counts first): the thirty-seventh review found an IndexError raised first."""
    a, b = np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"out\[0\] must have the result's shape and dtype"):
        check_outs([np.zeros(5, np.float32)], [a, b])


@pytest.mark.parametrize("given", [1 << 20, np.int64(1 << 20), np.uint32(1 << 20)])
def test_fusion_bytes_takes_numpy_integers_as_root_does(given):
    options = CallOptions.parse(fusion_bytes=given)
    assert options.fusion_bytes == 1 << 20 and type(options.fusion_bytes) is int


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, np.float64(8.0), "8", 1 << 63, 1 << 70])
def test_fusion_bytes_refuses_what_is_no_positive_integer(bad):
    """2**63 and more passed, then GradSync.attach failed in NumPy's int64 (the ninety-second
    review): refused as argument and as COLLECTIVES_FUSION_BYTES."""
    with pytest.raises(ValueError, match=r"fusion_bytes must be a positive int \(at most "
                                         r"2\*\*63 - 1\), got"):
        CallOptions.parse(fusion_bytes=bad)


@pytest.mark.parametrize("raw", ["0", "-8", str(1 << 63), "8x"])
def test_fusion_bytes_variable_refuses_what_is_no_positive_int64(monkeypatch, raw):
    monkeypatch.setenv("COLLECTIVES_FUSION_BYTES", raw)
    with pytest.raises(ValueError, match=rf"COLLECTIVES_FUSION_BYTES={raw!r} is not a valid "
                                         r"positive integer \(at most 2\*\*63 - 1\)"):
        Settings.resolve()


def test_a_disagreement_on_a_setting_names_its_environment_variable():
    """Ranks whose COLLECTIVES_FUSION_BYTES differ were told only that they disagree on
    the call's fusion_bytes, which no rank passed (the sixty-sixth review's note)."""
    from collectives.agreement import differences

    said = differences([{"fusion_bytes": "64", "shape": "(3,)"},
                        {"fusion_bytes": "32", "shape": "(3,)"}])
    assert said == ("rank 0 has fusion_bytes 64, rank 1 has 32 (the argument, or "
                    "COLLECTIVES_FUSION_BYTES where it is not given)")
    assert differences([{"shape": "(3,)"}, {"shape": "(4,)"}]) == \
        "rank 0 has shape (3,), rank 1 has (4,)"
    # only where the collective reads it: COLLECTIVES_ALGORITHM chooses no reduce's
    # algorithm (the seventy-eighth review); COLLECTIVES_DETERMINISTIC applies to all
    reduce = differences([{"collective": "reduce", "algorithm": "auto", "deterministic": "0"},
                          {"collective": "reduce", "algorithm": "tree", "deterministic": "1"}])
    assert reduce == ("rank 0 has algorithm auto, rank 1 has tree; rank 0 has deterministic "
                      "0, rank 1 has 1 (the argument, or COLLECTIVES_DETERMINISTIC where it is "
                      "not given)")
    assert "COLLECTIVES_ALGORITHM" in differences([{"collective": "allreduce", "algorithm": "a"},
                                                   {"collective": "allreduce", "algorithm": "b"}])


@pytest.mark.parametrize("collective", ["reduce_scatter", "allgather", "reduce", "broadcast"])
def test_a_compression_typo_with_native_is_named_as_a_typo(collective):
    """It was "compression='fp17' needs a plan algorithm ...: MPI's own has no codec" (the
    seventy-eighth review)."""
    from collectives.calls.collective import collective_options

    with pytest.raises(ValueError, match=re.escape("unknown compression 'fp17'")):
        collective_options(collective, algorithm="native", compression="fp17")
    with pytest.raises(ValueError, match="needs a plan algorithm"):
        collective_options(collective, algorithm="native", compression="fp16")
    # The list offered 'auto', which these then refused (the 107th review)
    with pytest.raises(ValueError, match=re.escape("accepted: None, 'fp16', 'bf16'") + "$"):
        collective_options(collective, compression="fp8")


def test_an_integer_array_refused_compression_is_told_it_travels_exactly():
    """It said "integers are summed exactly" to an allgather, which sums nothing (the 107th
    review)."""
    from collectives.compression import codec_for

    with pytest.raises(TypeError, match="integers travel exactly: pass compression=None"):
        codec_for("fp16", np.dtype(np.int32))


def test_numpy_bools_are_bools():
    """deterministic=np.True_ was a TypeError while a NumPy integer root is accepted (the
    seventy-eighth review); the options hold Python bools, so signatures agree."""
    options = CallOptions.parse(check_finite=np.True_, deterministic=np.True_)
    assert options.check_finite is True and options.deterministic is True
    with pytest.raises(TypeError, match="deterministic must be a bool, got 1"):
        CallOptions.parse(deterministic=1)


@pytest.mark.parametrize("seed", range(40))
def test_interleaved_views_are_compared_by_their_elements_alike(seed):
    """Columns of one matrix all meet: asking every pair took 7 s for 2000 (the 111th
    review); past a few pairs per array the elements are compared. Either way the pair
    named shares memory, and one is named where any written one does."""
    from collectives.validation import sharing_pair

    rng = np.random.default_rng(seed)
    base = np.zeros((6, 40), np.float32)
    views = [base[:, i] for i in rng.permutation(40)[: rng.integers(20, 40)]]
    for _ in range(rng.integers(0, 3)):  # a clash: a column again, or a row across them
        clash = base[int(rng.integers(6)), :] if rng.random() < 0.5 else \
            base[:, int(rng.integers(40))]
        views.insert(int(rng.integers(len(views) + 1)), clash)
    if rng.random() < 0.3:
        views.append(base.view(np.int32)[::2, 3])  # another dtype over the same bytes
    written = [bool(w) for w in rng.random(len(views)) < 0.8]
    pair = sharing_pair(views, written)
    clashes = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))
               if (written[i] or written[j]) and np.shares_memory(views[i], views[j])]
    assert (pair is None) == (not clashes), (pair, clashes[:3])
    if pair is not None:
        i, j = pair
        assert i < j and (written[i] or written[j]) and np.shares_memory(views[i], views[j])
