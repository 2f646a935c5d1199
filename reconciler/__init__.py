"""The stateless reconciler: bundle + SLURM + filesystem -> actions (see DESIGN.md)."""
