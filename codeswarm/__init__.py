"""codeswarm: swarms of Codex agents on Slurm clusters, driven over JSON lines."""

__version__ = "0.1.0"
