"""The console scripts' glue, one job per module: resolvers, model loading, the record's lifecycle,
Hydra's errors cut to one line, sweep expansion, output-folder checks. mmsafety.app composes them."""
