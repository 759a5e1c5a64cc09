"""What the Snakemake workflow reads: the validated config, the preflight checks that stop a
bad run before any job starts, the sweep's jobs and paths, the fan-in of proxy runs, the work
folder's logs and marks, and the Snakemake profiles.

May import `regmix.training`, `regmix.search`, `regmix.data` and the top-level helpers.
"""
