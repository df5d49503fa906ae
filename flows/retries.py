"""When a failed task is worth another try: Prefect's `retry_condition_fn`, from a test of the
error it raised."""

from __future__ import annotations

from collections.abc import Callable


def retry_if(worth_it: Callable[[BaseException], bool]) -> Callable:
    """A retry condition that retries a failed task run when `worth_it(its error)`."""
    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except Exception as e:
            return worth_it(e)
        return False
    return condition
