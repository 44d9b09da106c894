"""The twin's clock only jumps between handler invocations, never during one."""

from __future__ import annotations

import threading

from twin.gate import ClockGate

WAIT = 5.0


def test_a_clock_jump_waits_for_running_handlers_and_holds_new_ones_back():
    gate = ClockGate()
    order: list[str] = []
    in_handler, release_handler, jump_waiting = threading.Event(), threading.Event(), threading.Event()

    def running_handler() -> None:
        with gate.handler():
            in_handler.set()
            release_handler.wait(WAIT)
            order.append("first handler done")

    def jump() -> None:
        jump_waiting.set()
        with gate.advancing():
            order.append("clock moved")

    def later_handler() -> None:
        with gate.handler():
            order.append("later handler ran")

    first = threading.Thread(target=running_handler)
    first.start()
    assert in_handler.wait(WAIT)
    jumper = threading.Thread(target=jump)
    jumper.start()
    assert jump_waiting.wait(WAIT)
    jumper.join(0.2)
    assert jumper.is_alive() and order == []  # the jump waits for the running handler

    release_handler.set()
    first.join(WAIT)
    jumper.join(WAIT)
    later = threading.Thread(target=later_handler)
    later.start()
    later.join(WAIT)

    assert order == ["first handler done", "clock moved", "later handler ran"]


def test_handlers_run_side_by_side():
    gate = ClockGate()
    both_inside = threading.Barrier(2, timeout=WAIT)

    def handler() -> None:
        with gate.handler():
            both_inside.wait()  # raises BrokenBarrierError if the gate serialised them

    threads = [threading.Thread(target=handler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not both_inside.broken


def test_the_twins_moto_server_applies_one_request_at_a_time():
    import threading
    import time

    from twin.run import OneRequestAtATime

    running, most = 0, 0
    guard = threading.Lock()

    def slow_app(environ, start_response):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with guard:
            running -= 1
        start_response("200 OK", [])
        return iter([b"ok"])

    app = OneRequestAtATime(slow_app)
    answers: list[list[bytes]] = []
    threads = [threading.Thread(target=lambda: answers.append(app({}, lambda *a: None))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (most, answers) == (1, [[b"ok"]] * 8)
