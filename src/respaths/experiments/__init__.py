"""The test-time experiments on a view: delete and reorder blocks (lesion), and the paired statistics of
two models' lesion results (compare).
"""
