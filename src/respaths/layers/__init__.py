"""Layer sweeps for language models (importance: greedy, Block Influence, angular, painters), their
figures (figures), and `respaths prune`'s export of a pruned model (export).
"""
