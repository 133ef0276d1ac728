"""Analyses built on media and the model: the Event model, the video pipeline (later: Q&A, captions, chapters)."""

from core.events import Event, events_from_json, events_to_json, sort_events

__all__ = ["Event", "events_from_json", "events_to_json", "sort_events"]
