"""A run's bookkeeping: the run config (`spec`), what is left to train (`units`), the results store
(`store`), the run's identity and resume check (`identity`), the one-writer lock (`lock`), the rows a
training becomes (`rows`) and the base-LR finder's pick rule and cache (`base_lr`).

No torch and no Ray: this layer decides *what* to train and keeps what came back.
"""
