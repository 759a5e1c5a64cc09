"""Watching a sweep: `regmix plan` (jobs, FLOPs, disk and wall time before a run, from measured
step times and a simulated schedule) and `regmix status` (what is done, running and failed,
with an ETA). Status imports neither torch nor Lightning.

May import `regmix.workflow` and everything below it; nothing imports it but the CLI.
"""
