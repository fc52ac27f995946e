"""aq's command line: parse arguments, call operations, format results. Nothing else."""
