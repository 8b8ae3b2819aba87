"""Your own diffusion models: diffusers pipelines (and any module with a UNet's call) as rrrdsl models.

==========================  ==================================================================
module                      holds
==========================  ==================================================================
``schedule``                the model's own ``alphas_cumprod`` as a level schedule (``levels=K``)
``parameterisation``        ε-, v- and x₀-predictions as ``ε̂``; the energy forms ``E_θ``
``conditions``              class labels and text prompts (encoded once, cached)
``adapter``                 :class:`~.adapter.DiffusersBackbone`: one batched forward per call
``loading``                 pipeline folders (safetensors only) and :func:`~.loading.register_diffusers`
``modules``                 a plain torch module through ``rrrdsl.register_model(name, module, shape=...)``
==========================  ==================================================================

``rrrdsl.register_diffusers("sd", folder)`` makes ``model("sd", prompt="a dog")`` resolve to the
pipeline in ``folder``; every leaf of one pipeline in a graph shares its network, so a composition
such as ``model("sd", prompt="a dog") * model("sd", prompt="a hat") ** 2 / model("sd",
prompt="a cartoon")`` costs one forward of the UNet per evaluation. The models are score-only
(``∇ log q_t = -ε̂ / σ_t``) unless the folder declares an energy-parameterised network.

Nothing here imports diffusers or transformers until a pipeline is loaded: the extra
``rrrdsl[diffusers]`` is needed only then.
"""
