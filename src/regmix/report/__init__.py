"""What a person reads at the end: the summary of the final models against the prediction and
the baselines, and the figures of the report.

May import `regmix.search`, `regmix.data` and the top-level helpers; only the CLI imports it.
"""
