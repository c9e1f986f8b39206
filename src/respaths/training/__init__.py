"""Training the paper's nets: the trainer (trainer), the same under torchrun (ddp), and train, which
picks one for this process.
"""
