"""The console scripts' glue, one job per module: resolvers, model loading, the record's lifecycle,
Hydra's errors cut to one line, sweep expansion, output-folder checks, what identifies a run and
which folder may hold it (run_identity), launchers that cannot work here, the job's log lines.
mmsafety.app composes them."""
