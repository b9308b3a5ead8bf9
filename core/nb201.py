"""NB201's benchmark recipe, declared once (digest §4.1b): the network size and the training every
published number comes from. `TrainConfig`, `NetShape`, `RunSpec`, the results row and the CLI take
their defaults from here.
"""

from __future__ import annotations

WIDTH = 16
"""C: channels of the first stage."""
CELLS_PER_STAGE = 5
"""N: cells per stage."""
EPOCHS = 200
BATCH_SIZE = 256
LR = 0.1
"""The same peak LR for every cell, cosine to 0."""
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
NESTEROV = True
INIT_RULE = "torch-default"
"""NB201's training code never re-initialises: PyTorch's layer defaults."""
