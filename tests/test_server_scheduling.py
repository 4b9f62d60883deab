"""The pure scheduling and admission rules (server/scheduling.py, server/admission.py): no threads."""
from __future__ import annotations

import pytest

from magnet.server.admission import DrainRate, estimated_wait_s, retry_after_s
from magnet.server.scheduling import plan_joining, plan_oneshot
from magnet.server.testing import RawWork
from magnet.server.worker import Job


def job(key=("embed",), sizes=None, tokens=0, decode=False, rows=1, new_tokens=0, done=0) -> Job:
    payload = list(range(len(sizes))) if sizes is not None else "x"
    work = RawWork("embed", key, payload, None, tokens, sizes, decode, rows=rows, new_tokens=new_tokens)
    return Job(work, None, done=done)


def spans(slices) -> list[tuple[int, int, int]]:
    return [(id(part.job), part.start, part.stop) for part in slices]


def test_a_job_bigger_than_the_budget_gives_one_slice_of_whole_items():
    big = job(sizes=[400] * 10)
    [part] = plan_oneshot([big], budget=1000)
    assert (part.start, part.stop, part.tokens, part.payload, part.last) == (0, 2, 800, [0, 1], False)
    big.done = 8
    [part] = plan_oneshot([big], budget=1000)
    assert (part.start, part.stop, part.last) == (8, 10, True)


def test_an_item_over_the_budget_still_runs_alone_first():
    huge = job(sizes=[5000, 10])
    [part] = plan_oneshot([huge], budget=1000)
    assert (part.start, part.stop) == (0, 1)


def test_small_jobs_of_the_key_fill_the_budget_after_the_oldest_and_other_keys_wait():
    big, other, small = job(sizes=[600] * 4), job(key=("tag",), sizes=[5]), job(sizes=[300])
    slices = plan_oneshot([big, other, small], budget=1000)
    assert spans(slices) == [(id(big), 0, 1), (id(small), 0, 1)]


def test_a_job_without_key_runs_alone():
    alone, small = job(key=None, tokens=5), job(sizes=[3])
    assert spans(plan_oneshot([alone, small], budget=100)) == [(id(alone), 0, 0)]


def test_decodes_join_within_rows_kv_and_the_prefill_budget_first_come_first_served():
    a = job(decode=True, tokens=600, rows=2, new_tokens=100)
    b = job(decode=True, tokens=600, rows=1, new_tokens=100)
    c = job(decode=True, tokens=10, rows=1, new_tokens=10)
    # the prefill budget (1000) stops b; c does not overtake it
    assert plan_joining([a, b, c], rows=0, kv_tokens=0, max_rows=64, max_kv_tokens=10_000, budget=1000) == [a]
    # an idle worker takes the first however big; a busy one only what fits
    assert plan_joining([a], rows=0, kv_tokens=0, max_rows=1, max_kv_tokens=10, budget=1) == [a]
    assert plan_joining([a], rows=1, kv_tokens=0, max_rows=2, max_kv_tokens=10_000, budget=1000) == []
    assert plan_joining([c, b], rows=1, kv_tokens=0, max_rows=64, max_kv_tokens=10_000, budget=1000) == [c, b]


def test_the_drain_rate_is_work_over_busy_time_in_a_window():
    rate = DrainRate(window_s=2.0, min_s=0.5)
    assert rate.per_second is None
    rate.record(10, 0.01)
    assert rate.per_second is None  # too short a measure
    rate = DrainRate(window_s=2.0, min_s=0.5)
    rate.record(1000, 1.0)
    rate.record(3000, 1.0)
    assert rate.per_second == pytest.approx(2000)
    rate.record(100, 1.0)  # the first second leaves the window
    assert rate.per_second == pytest.approx(1550)


def test_the_wait_estimate_and_retry_after_come_from_the_rate():
    assert estimated_wait_s(5000, None) == 0.0
    assert estimated_wait_s(5000, 1000.0) == pytest.approx(5.0)
    assert retry_after_s(9000, 1000.0, max_wait_s=5.0) == 4.0
    assert retry_after_s(5100, 1000.0, max_wait_s=5.0) == 1.0
