"""Class-conditional diffusion models, a noise-aware classifier and an evaluator on 8×8 digits.

Data (:mod:`.data`): ``sklearn.datasets.load_digits`` (1,797 images of 8×8 pixels, values
0..16, 10 classes), scaled to ``[-1, 1]`` and flattened row-major to ``D = 64``. One fixed
permutation (seed 0) splits them into ``train`` (55%: the diffusion backbone and the guidance
classifier), ``evaluator`` (25%: the independent evaluation classifier) and ``test`` (20%: held
out; the reference set of the Fréchet distance and the evaluator's test accuracy).

Three networks (:mod:`.nets`, wrapped as models in :mod:`.models`), all trained by
:class:`rrrdsl.zoo.training.Trainer` (Adam, cosine learning rate, EMA; :mod:`.train`):

* :class:`~.models.DigitsBackbone` — an energy-parameterised conditional diffusion model
  ``E_θ(x, t, y) = ½ ‖x - f_θ(x, t, y)‖²`` with ``log q_t(x | y) = -E_θ / σ_t - ½ ‖x‖²``
  (Salimans & Ho, 2021; Du et al., 2023, section 3.3) over a standard-normal base (see
  :class:`~.models.DigitsBackbone` for why). ``f_θ`` is the residual MLP of
  :mod:`rrrdsl.zoo.nets` with a label embedding added to the level embedding; label slot 10
  is "no label", used with probability :data:`.train.CONDITION_DROPOUT` during training (Ho &
  Salimans, 2022, classifier-free guidance), so one network serves ``model("digits")`` and
  ``model("digits", label=3)``. All conditions of a graph are evaluated in one forward pass.
* :class:`~.models.ClassifierBackbone` — a noise-aware classifier ``log p(y | x_t, t)`` (a
  log-softmax of a time-conditioned residual MLP trained on digits noised at uniform levels;
  Dhariwal & Nichol, 2021, classifier guidance): ``classifier("digits", label=3)``.
* :class:`~.nets.Evaluator` — an independent classifier of *clean* digits (plain ReLU MLP,
  another seed and data split) whose penultimate layer gives features for a Fréchet distance
  (Heusel et al., 2017; :func:`rrrdsl.metrics.frechet_distance`).

Checkpoints and registration: :mod:`.loading`. Train the shipped checkpoints (about 3 minutes
on one free CPU thread)::

    rrr train digits [--steps 12000] [--out rrrdsl/zoo/digits/checkpoints] [--threads 1]

which writes ``digits-backbone``, ``digits-classifier`` and ``digits-evaluator`` (``.pt`` +
``.json``, each well under 1 MB) and prints the test accuracies.
"""
