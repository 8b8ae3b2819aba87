"""The 2D zoo: learned energy and score models of the named 2D datasets (``model("ring")``).

``models`` (the two parameterisations), ``loading`` (checkpoints of kind ``toy2d`` and their
registration), ``train`` (``rrr train [toy2d] NAME|--zoo``), ``checkpoints/`` (the shipped weights).
"""
