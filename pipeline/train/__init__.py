"""The training engine: the NB201 network (`model`; K of them fused into one, `fused_model`), the
data on the device (`data`; files read by `readers`, fetched by `download`), and one training loop
(`loop`) that both trainers drive: a lone network (`engine.train`) or K networks of one cell fused
into one (`fused.train_group`). `numerics` picks the device and the arithmetic.

Torch only: no Ray, no run folder. Imports `core` and `cells`.
"""
