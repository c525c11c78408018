"""dlbook: a CNN-training course assignment as a reproducible, executable book."""
