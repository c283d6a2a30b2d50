"""A rich progress bar for batch runs (used by ``medseg batch`` and ``medseg demo``)."""

from __future__ import annotations

from typing import Any


def rich_progress(console: Any) -> tuple[Any, Any, Any]:
    """A rich progress bar (done/failed, rate, ETA) and the ``on_start``/``on_record`` callbacks of
    :func:`~medseg.batch.runner.run_batch` that drive it; use the bar as a context manager."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("ok {task.fields[ok]} failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    state: dict[str, Any] = {"task": None, "ok": 0, "failed": 0}

    def on_start(todo: int, skipped: int) -> None:
        if skipped:
            console.print(f"resuming: {skipped} studies already complete, {todo} to run")
        state["task"] = progress.add_task("studies", total=todo, ok=0, failed=0, rate="")
        state["start"] = progress.get_time()

    def on_record(record: dict[str, Any]) -> None:
        key = "ok" if record.get("status") == "ok" else "failed"
        state[key] += 1
        done = state["ok"] + state["failed"]
        minutes = max(progress.get_time() - state["start"], 1e-6) / 60
        progress.update(state["task"], advance=1, ok=state["ok"], failed=state["failed"],
                        rate=f"{done / minutes:.1f}/min")
        if key == "failed":
            err = record.get("error") or {}
            progress.console.print(f"[red]{record.get('status')}[/red] {record['study_id']}: {err.get('message', '')}")

    return progress, on_start, on_record


__all__ = ["rich_progress"]
