"""Training the paper's nets: one process (train) and under torchrun (ddp).
"""
