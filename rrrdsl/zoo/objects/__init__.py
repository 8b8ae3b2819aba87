"""Objects on a grid: scenes, a detector and cell-conditional diffusers UNets (issue 16).
"""
