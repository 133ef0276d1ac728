"""Background jobs: long work in a thread with progress, ETA and cancel, shared by every session.

A job is named by a key (e.g. ``"video:<sha256>:<params>"``); submitting a key already running
returns the running job, so a rerun, a page change or a second browser tab sees the same progress.
Work functions save their results as they come (to the result cache), so a job started again after
a restart resumes from the parts already saved.

    job = registry().submit("video:abc", "Analyze talk.mp4", lambda ctx: analyze(..., progress=ctx.progress,
                                                                              cancel=ctx.cancel))
    job.snapshot().fraction, job.snapshot().eta_s; job.cancel()
"""

from core.jobs.registry import Job, JobContext, JobRegistry, JobSnapshot, JobState, format_eta, registry

__all__ = ["Job", "JobContext", "JobRegistry", "JobSnapshot", "JobState", "format_eta", "registry"]
