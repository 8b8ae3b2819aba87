"""Objects on a grid: the multi-object experiment of Du et al. (2023, section 5.3) on a CPU.

=============  ====================================================================================
module         holds
=============  ====================================================================================
``data``       seeded 16×16 scenes of 1-5 discs in distinct cells of a 4×4 grid, their occupancy,
               and the training examples (the cell of one object, or the null cell)
``detector``   a deterministic detector (mean of a 2×2 patch at each cell centre against a threshold
               calibrated on real scenes) and its held-out accuracy per cell
``train``      ``rrr train objects``: a cell-conditional diffusers ``UNet2DModel`` as an energy
               (``E = ½‖f‖²``, ``ε̂ = ∇ₓE``) and as its score twin, saved as pipeline folders
``loading``    ``model("objects", cell=c)`` and ``model("objects_score", cell=c)`` (the bare name:
               the null cell), registered through the diffusers adapter (:mod:`rrrdsl.zoo.diffusers`)
``quality``    how often ``model(name, cell=c)`` puts an object in cell ``c`` under reverse diffusion
=============  ====================================================================================

The composition of ``k`` positions is the product of experts
``model("objects", cell=c1) * ... * model("objects", cell=ck) / model("objects") ** (k-1)``;
the detector judges its samples with no learned evaluator in the loop. The shipped folders are
in ``checkpoints/`` (``make objects`` retrains them).
"""
