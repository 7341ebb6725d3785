"""droplab.rng: Philox4x32-10 known answers and the stream layout of DESIGN.md."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from droplab.rng import philox4x32, random_words, seed_to_key

# Known-answer vectors of Philox4x32-10 (Salmon et al. 2011; Random123's kat_vectors),
# as listed in DESIGN.md: counter[4], key[2] -> out[4].
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_known_answer_vectors(counter, key, expected):
    out = philox4x32(np.array(counter, np.uint32), np.array(key, np.uint32))
    assert out.dtype == np.uint32
    assert out.tolist() == list(expected)


def test_known_answers_vectorised_over_leading_dims_and_broadcast_keys():
    counters = np.array([c for c, _, _ in KNOWN_ANSWERS], np.uint32)  # (3, 4)
    keys = np.array([k for _, k, _ in KNOWN_ANSWERS], np.uint32)  # (3, 2)
    expected = np.array([e for _, _, e in KNOWN_ANSWERS], np.uint32)
    np.testing.assert_array_equal(philox4x32(counters, keys), expected)
    # One key broadcast against a (2, 3, 4) batch of counters.
    batch = np.broadcast_to(counters, (2, 3, 4))
    out = philox4x32(batch, keys[1])
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out[1, 1], expected[1])


def test_zero_rounds_is_the_identity():
    counter = np.array(KNOWN_ANSWERS[2][0], np.uint32)
    np.testing.assert_array_equal(philox4x32(counter, [1, 2], rounds=0), counter)


def test_seed_splits_into_low_and_high_key_words():
    assert seed_to_key(0x299F31D0A4093822) == (0xA4093822, 0x299F31D0)
    assert seed_to_key(2**64 - 1) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert seed_to_key(5) == (5, 0)


def test_random_words_start_with_the_first_known_answer():
    assert random_words(0, 0, 4).tolist() == list(KNOWN_ANSWERS[0][2])


@pytest.mark.parametrize(
    ("seed", "j"),
    [(0, 0), (7, 5), (0x299F31D0A4093822, 4 * 12345 + 3), (2**64 - 1, 4 * 2**32 + 2)],
)
def test_element_j_is_word_j_mod_4_of_counter_j_div_4(seed, j):
    block = j // 4
    counter = np.array([block & 0xFFFFFFFF, block >> 32, 0, 0], np.uint32)
    words = philox4x32(counter, np.array(seed_to_key(seed), np.uint32))
    assert random_words(seed, j, 1)[0] == words[j % 4]


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    seed=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 2**40),
    n=st.integers(0, 40),
    data=st.data(),
)
def test_any_slice_of_a_stream_can_be_drawn_on_its_own(seed, offset, n, data):
    a = data.draw(st.integers(0, n))
    words = random_words(seed, offset, n)
    assert words.shape == (n,)
    assert words.dtype == np.uint32
    np.testing.assert_array_equal(words[a:], random_words(seed, offset + a, n - a))


def test_words_are_uniform_by_a_chi_square_test_on_the_top_byte():
    words = random_words(2024, 0, 2**18)
    counts = np.bincount(words >> 24, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3
    # The low byte too: a bad multiplier would show up there first.
    assert stats.chisquare(np.bincount(words & 0xFF, minlength=256)).pvalue > 1e-3


def test_neighbouring_seeds_give_unrelated_streams():
    a = random_words(1, 0, 4096).astype(np.int64)
    b = random_words(2, 0, 4096).astype(np.int64)
    assert np.count_nonzero(a == b) == 0
    # Correlation of uniform words within 6 standard errors of 0 (1/sqrt(n)).
    assert abs(np.corrcoef(a, b)[0, 1]) < 6 / np.sqrt(a.size)


def test_philox_refuses_bad_counters_and_keys():
    with pytest.raises(
        ValueError,
        match=r"The 'counter' argument must be an array of shape \(\.\.\., 4\)",
    ):
        philox4x32(np.zeros(3, np.uint32), np.zeros(2, np.uint32))
    with pytest.raises(
        ValueError, match=r"The 'key' argument must be an array of shape \(\.\.\., 2\)"
    ):
        philox4x32(np.zeros(4, np.uint32), np.zeros(3, np.uint32))
    with pytest.raises(
        TypeError,
        match=r"The 'counter' argument must be an array of unsigned 32-bit integers",
    ):
        philox4x32(np.zeros(4), np.zeros(2, np.uint32))
    with pytest.raises(
        ValueError,
        match=r"The 'key' argument must be 32-bit words, each in \[0, 2\*\*32\)",
    ):
        philox4x32(np.zeros(4, np.uint32), np.array([-1, 0]))
    with pytest.raises(
        ValueError,
        match=r"The 'rounds' argument of philox4x32 must be an integer in \[0, 65536\); got -1\.",
    ):
        philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32), rounds=-1)


def test_random_words_refuses_bad_arguments():
    with pytest.raises(
        ValueError,
        match=r"The 'seed' argument of random_words must be an integer in \[0, 18446744073709551616\); got 18446744073709551616\.",
    ):
        random_words(2**64, 0, 1)
    with pytest.raises(
        ValueError,
        match=r"The 'offset' argument of random_words must be an integer in \[0, \d+\); got -1\.",
    ):
        random_words(0, -1, 1)
    with pytest.raises(
        ValueError,
        match=r"The 'n' argument of random_words must be an integer in \[0, inf\); got -2\.",
    ):
        random_words(0, 0, -2)
    with pytest.raises(
        TypeError, match=r"The 'n' argument of random_words must be an integer"
    ):
        random_words(0, 0, 2.0)


def test_draw_seed_is_torch_randint_on_the_default_cpu_generator():
    import threading

    import torch

    from droplab.rng import draw_seed

    def reference(count: int) -> list[int]:
        return [
            int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
            for _ in range(count)
        ]

    torch.manual_seed(11)
    expected = reference(4)
    after = torch.get_rng_state()
    torch.manual_seed(11)
    assert [draw_seed() for _ in range(4)] == expected
    assert torch.equal(torch.get_rng_state(), after)  # the same generator state

    # A thread's first draw under inference_mode makes its buffer there; later
    # draws outside it (and under a default device) still work and agree.
    drawn: list[int] = []

    def worker() -> None:
        torch.manual_seed(5)
        with torch.inference_mode():
            drawn.append(draw_seed())
        with torch.device("meta"):
            drawn.append(draw_seed())
        drawn.append(draw_seed())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    torch.manual_seed(5)
    assert drawn == reference(3)
