"""The Ray layer: the connection and resources (`cluster`), checks before any training (`preflight`),
the sweep through Ray tasks (`orchestrate`), the base-LR grid through Ray Tune (`finder`), and what one
task does (`worker`). Only this layer imports Ray.
"""
