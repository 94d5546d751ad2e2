"""Where a base model comes from: the zoo, the shipped samples, checkpoints and program files."""
