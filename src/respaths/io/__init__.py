"""Files: the one atomic writer (atomic), training checkpoints (checkpoint), reading models and published
weights (loading), resumable result files (results).
"""
