"""The training engine: the NB201 network (`model`), the data on the device (`data`), and one training
loop for a lone network (`engine.train`) or K networks of one cell fused into one (`fused.train_group`).

Torch only: no Ray, no run folder. Imports `core` and `cells`.
"""
