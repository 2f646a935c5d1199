"""oellm: compile declarative LLM training sweeps into SLURM bundles; reconcile them from cron."""

__version__ = "0.1.0"
