"""The diffusers adapter (rrrdsl.zoo.diffusers): native schedules, the score of every prediction
type against its definition, energies against finite differences, class labels and prompts in one
batched forward, pipeline folders (safetensors only) and their errors.

The pipelines are tiny networks built from configs with random weights, saved with
``save_pretrained`` once per session and loaded offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import rrrdsl  # noqa: E402
from rrrdsl.errors import CheckpointError, CompileError, InvalidValueError, RrrdslError, SamplerError, UnknownNameError  # noqa: E402
from rrrdsl.lang.ir import model  # noqa: E402
from rrrdsl.models import registry  # noqa: E402
from rrrdsl.zoo.diffusers import loading  # noqa: E402
from rrrdsl.zoo.diffusers.adapter import DiffusersBackbone  # noqa: E402
from rrrdsl.zoo.diffusers.conditions import Labels  # noqa: E402
from rrrdsl.zoo.diffusers.parameterisation import ENERGIES  # noqa: E402
from rrrdsl.zoo.diffusers.schedule import native_schedule, retime  # noqa: E402

F64 = torch.float64
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def class_unet(**config):
    """The class-conditional UNet2DModel of issue 15 (8x8, 1 channel, 10 labels + a null slot)."""
    torch.manual_seed(0)
    sizes = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8)
    blocks = dict(down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    return diffusers.UNet2DModel(**sizes, **blocks, **{"num_class_embeds": 11, **config}).eval()


def text_components(folder):
    """A tiny UNet2DConditionModel (2 channels, 8x8), a CLIP text encoder and a character-level
    CLIP tokenizer from a vocabulary written into ``folder``."""
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    ).eval()
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate([*LETTERS, *(c + "</w>" for c in LETTERS), *specials])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=vocab[specials[0]], eos_token_id=vocab[specials[1]], pad_token_id=vocab[specials[1]],
    )
    return unet, transformers.CLIPTextModel(config).eval(), tokenizer


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory):
    """Saved pipeline folders: ``labels`` (class-conditional, v-prediction) and ``prompts``."""
    root = tmp_path_factory.mktemp("pipelines")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=class_unet(), scheduler=scheduler).save_pretrained(root / "labels")
    unet, encoder, tokenizer = text_components(root / "vocab")
    prompts = root / "prompts"
    unet.save_pretrained(prompts / "unet")
    encoder.save_pretrained(prompts / "text_encoder")
    tokenizer.save_pretrained(prompts / "tokenizer")
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_pretrained(prompts / "scheduler")
    index = {"_class_name": "DiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}
    (prompts / "model_index.json").write_text(json.dumps(index))
    return {"labels": root / "labels", "prompts": prompts}


def test_native_schedule_follows_alphas_cumprod():
    alphas_cumprod = diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.to(F64)
    full = native_schedule(alphas_cumprod)
    assert full.schedule.num_levels == 1000
    assert torch.allclose(full.schedule.alpha_bar, alphas_cumprod, rtol=1e-12)
    assert torch.equal(full.timesteps, torch.arange(1000, dtype=F64))
    sub = native_schedule(alphas_cumprod, 10)
    assert sub.timesteps.tolist() == [k * 111.0 for k in range(10)]  # 999 / 9 = 111: integer timesteps
    assert torch.allclose(sub.schedule.alpha_bar, alphas_cumprod[::111], rtol=1e-12)
    between = native_schedule(alphas_cumprod, 7)  # 999 / 6 = 166.5: float timesteps, ᾱ interpolated in log
    tau = between.timesteps[1]
    assert tau == 166.5
    assert torch.isclose(between.schedule.alpha_bar[1], (alphas_cumprod[166] * alphas_cumprod[167]).sqrt(), rtol=1e-12)
    assert sub.schedule != between.schedule and sub.schedule == native_schedule(alphas_cumprod, 10).schedule
    for bad in (1, 1001, 2.5, True):
        with pytest.raises(InvalidValueError, match="levels must be an integer from 2 to 1000"):
            native_schedule(alphas_cumprod, bad)


class Oracle(torch.nn.Module):
    """A perfect denoiser for known ``(x0, eps)``: it returns the scheduler's target of its
    prediction type (eps, v from diffusers' ``get_velocity``, or x0)."""

    def __init__(self, scheduler, x0, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=F64))
        self.scheduler, self.x0, self.eps = scheduler, x0, eps

    def forward(self, sample, timestep):
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return self.eps
        if kind == "sample":
            return self.x0
        return self.scheduler.get_velocity(self.x0, self.eps, timestep.long())


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_score_is_minus_the_true_noise_over_sigma_for_every_prediction_type(prediction):
    """x_t = √ᾱ x0 + σ ε with a network that predicts exactly: the score must be -ε/σ."""
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(F64)
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 4, 4, generator=generator, dtype=F64), torch.randn(6, 1, 4, 4, generator=generator, dtype=F64)
    levels = torch.tensor([0, 3, 100, 500, 900, 999])
    alpha_bar = scheduler.alphas_cumprod[levels].reshape(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    backbone = DiffusersBackbone(Oracle(scheduler, x0, eps), native_schedule(scheduler.alphas_cumprod), (1, 4, 4), prediction)
    score = backbone.score(x_t.reshape(6, 16), levels, [None])[0]
    expected = -eps.reshape(6, 16) / (1 - alpha_bar.reshape(-1, 1)).sqrt()
    assert torch.allclose(score, expected, rtol=1e-9, atol=1e-9)


def test_score_is_a_direct_unet_call_at_the_level_timestep():
    unet = class_unet()
    native = native_schedule(diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, 7)
    backbone = DiffusersBackbone(unet, native, (1, 8, 8), conditions=Labels(11))
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    score = backbone.score(x, 1, [3, None])
    with torch.no_grad():
        for row, label in enumerate([3, 10]):
            eps = unet(x.reshape(3, 1, 8, 8), torch.full((3,), 166.5), class_labels=torch.full((3,), label)).sample.reshape(3, 64)
            assert torch.allclose(score[row], -eps / native.schedule.sigma[1].float(), atol=1e-5)
    assert backbone.forwards == 1


@pytest.mark.parametrize("energy", ["norm", "inner", "residual"])
def test_energy_gradient_matches_finite_differences(energy):
    unet = class_unet(num_class_embeds=None).double()
    native = native_schedule(diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, 10)
    backbone = DiffusersBackbone(unet, native, (1, 8, 8), energy=energy)
    generator = torch.Generator().manual_seed(3)
    x, direction = torch.randn(2, 64, generator=generator, dtype=F64), torch.randn(2, 64, generator=generator, dtype=F64)
    h = 1e-5
    for t in (1, 5):
        difference = (backbone.log_prob(x + h * direction, t, [None]) - backbone.log_prob(x - h * direction, t, [None]))[0] / (2 * h)
        score = backbone.score(x, t, [None])[0]
        assert torch.allclose((score * direction).sum(-1), difference, rtol=1e-6)
        # the score is -ε̂/σ with ε̂ = ∇E
        rows = x.clone().requires_grad_(True)
        f = unet(rows.reshape(2, 1, 8, 8), torch.full((2,), float(native.timesteps[t]))).sample.reshape(2, 64)
        (grad_energy,) = torch.autograd.grad(ENERGIES[energy](rows, f).sum(), rows)
        assert torch.allclose(score, -grad_energy / native.schedule.sigma[t], rtol=1e-10)


def test_adapter_rejects_bad_settings():
    native = native_schedule(diffusers.DDPMScheduler(num_train_timesteps=10).alphas_cumprod)
    unet = class_unet()
    with pytest.raises(InvalidValueError, match="unknown prediction type 'eps'"):
        DiffusersBackbone(unet, native, (1, 8, 8), "eps")
    with pytest.raises(InvalidValueError, match="prediction type must be 'epsilon'"):
        DiffusersBackbone(unet, native, (1, 8, 8), "sample", energy="norm")
    with pytest.raises(InvalidValueError, match="max_batch"):
        DiffusersBackbone(unet, native, (1, 8, 8), max_batch=0)
    with pytest.raises(CompileError, match="score-only"):
        DiffusersBackbone(unet, native, (1, 8, 8)).log_prob(torch.zeros(1, 64), 0, [None])


def forward_counter(module):
    """A list that grows by one at every forward of ``module``."""
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_class_labels_go_through_one_forward_and_combine_as_the_expression_says(pipelines, isolated_registry):
    rrrdsl.register_diffusers("tiny", pipelines["labels"], levels=10)
    target = rrrdsl.compile(model("tiny", label=3) * model("tiny", label=5) ** 2 / model("tiny"))
    backbone = registry.resolve(model("tiny")).backbone
    assert backbone._denoiser is None  # compiling reads no weights
    assert isinstance(backbone.conditions, Labels) and backbone.prediction == "v_prediction" and not target.has_energy
    assert target.schedule == backbone.schedule and target.dim == 64
    calls = forward_counter(backbone.denoiser)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(4))
    score = target.score(x, 6)
    assert len(calls) == 1
    each = backbone.score(x, 6, [3, 5, None])
    assert torch.allclose(score, each[0] + 2 * each[1] - each[2], atol=1e-5)


def test_three_prompts_cost_one_unet_forward_per_step_and_three_encodings(pipelines, isolated_registry):
    rrrdsl.register_diffusers("sd", pipelines["prompts"], levels=8)
    target = rrrdsl.compile(model("sd", prompt="a dog") * model("sd", prompt="a hat") ** 2 / model("sd", prompt="a cartoon"))
    backbone = registry.resolve(model("sd", prompt="a dog")).backbone
    unet_calls, text_calls = forward_counter(backbone.denoiser), forward_counter(backbone.conditions.components[1])
    evaluations = []
    score = target.score
    target.score = lambda x, t: evaluations.append(t) or score(x, t)
    for sampler, options in [("reverse", {}), ("ula", {"steps": 2, "mcmc_levels": (0, 3)}), ("mala", {"steps": 2, "mcmc_levels": (0, 3), "mh": "line_integral"})]:
        result = rrrdsl.sample(target, sampler, n=3, seed=0, progress=False, **options)
        assert torch.isfinite(result.x).all() and result.x.shape == (3, 128)
    assert len(evaluations) > 8 and len(unet_calls) == len(evaluations)
    with pytest.raises(SamplerError, match="pass mh='line_integral' to estimate energy differences from the score"):
        rrrdsl.sample(target, "mala", n=3, mcmc_levels=(0, 3))
    assert len(text_calls) == 3 and sorted(backbone.conditions.cache) == ["a cartoon", "a dog", "a hat"]


def test_the_empty_prompt_is_the_unconditional_model_and_max_batch_chunks(pipelines, isolated_registry):
    rrrdsl.register_diffusers("sd", pipelines["prompts"], levels=8, max_batch=5)
    unconditional, empty = registry.resolve(model("sd")), registry.resolve(model("sd", prompt=""))
    assert unconditional.condition == empty.condition == ""
    backbone = unconditional.backbone
    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(5))
    chunked = backbone.score(x, 3, ["", "a dog", "a hat"])
    assert backbone.forwards == 3  # 12 rows in chunks of 5
    backbone.max_batch = None
    assert torch.allclose(chunked, backbone.score(x, 3, ["", "a dog", "a hat"]), atol=1e-5)
    assert backbone.forwards == 4


def test_an_energy_declared_in_the_folder_gives_log_densities(pipelines, isolated_registry, tmp_path):
    import shutil

    folder = shutil.copytree(pipelines["prompts"], tmp_path / "energy")
    (folder / "rrrdsl.json").write_text(json.dumps({"energy": "norm"}))
    rrrdsl.register_diffusers("energy", folder, levels=8)
    target = rrrdsl.compile(model("energy", prompt="a dog") + model("energy", prompt="a hat"))
    assert target.has_energy
    x = torch.randn(2, 128, generator=torch.Generator().manual_seed(6))
    log_prob, grad = target.log_prob_and_grad(x, 4)
    assert torch.isfinite(log_prob).all() and torch.allclose(grad, target.score(x, 4))
    (folder / "rrrdsl.json").write_text(json.dumps({"energy": "square"}))
    with pytest.raises(CheckpointError, match="energy must be one of norm, inner, residual"):
        loading.load_pipeline(folder)
    (folder / "rrrdsl.json").write_text(json.dumps({"null_label": "last"}))
    with pytest.raises(CheckpointError, match="null_label must be an integer, got 'last'"):
        loading.load_pipeline(folder)


def test_a_folder_names_its_label_keyword(pipelines, isolated_registry, tmp_path):
    import shutil

    folder = shutil.copytree(pipelines["labels"], tmp_path / "digit")
    (folder / "rrrdsl.json").write_text(json.dumps({"label_keyword": "digit"}))
    rrrdsl.register_diffusers("named", folder, levels=10)
    rrrdsl.register_diffusers("plain", pipelines["labels"], levels=10)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    named = rrrdsl.compile(model("named", digit=3) ** 2 / model("named")).score(x, 5)
    assert torch.equal(named, rrrdsl.compile(model("plain", label=3) ** 2 / model("plain")).score(x, 5))
    with pytest.raises(UnknownNameError, match=r"model\(.named.\) takes no argument 'label'") as error:
        registry.resolve(model("named", label=3))
    assert error.value.hint == "it takes digit="
    with pytest.raises(InvalidValueError, match="digit must be an integer 0..9, got 10") as error:
        registry.resolve(model("named", digit=10))
    assert error.value.hint == "digit 10 is the unconditional slot: omit digit= for it"
    for keyword in ("two words", 3, "schedule"):
        (folder / "rrrdsl.json").write_text(json.dumps({"label_keyword": keyword}))
        with pytest.raises(CheckpointError, match=f"label_keyword must be a keyword name other than prompt and schedule, got {keyword!r}"):
            loading.load_pipeline(folder)


def test_folders_and_names_fail_with_one_clear_line(pipelines, isolated_registry, tmp_path):
    import shutil

    with pytest.raises(CheckpointError, match="no diffusers pipeline folder at 'nowhere/sd'"):
        rrrdsl.register_diffusers("sd", "nowhere/sd")
    with pytest.raises(CheckpointError, match="has no model_index.json"):
        rrrdsl.register_diffusers("sd", pipelines["prompts"] / "unet")
    folder = shutil.copytree(pipelines["labels"], tmp_path / "pickled")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.bin is a pickle: rrrdsl loads weights from safetensors only"):
        rrrdsl.register_diffusers("sd", folder)
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="unet holds no .safetensors weights"):
        rrrdsl.register_diffusers("sd", folder)
    with pytest.raises(InvalidValueError, match="levels must be an integer from 2 to 1000"):
        rrrdsl.register_diffusers("sd", pipelines["labels"], levels=1001)
    rrrdsl.register_diffusers("hub", "someone/some-pipeline", download=True)  # nothing is fetched yet
    with pytest.raises(CheckpointError, match="cannot download 'someone/some-pipeline'") as error:
        registry.resolve(model("hub"))
    assert "\n" not in error.value.message
    rrrdsl.register_diffusers("tiny", pipelines["labels"], levels=10)
    with pytest.raises(UnknownNameError, match="unknown model 'tiyn'") as error:
        registry.resolve(model("tiyn"))
    assert "tiny" in error.value.hint
    with pytest.raises(UnknownNameError, match=r"model\(\"tiny\"\) takes no argument 'prompt'"):
        registry.resolve(model("tiny", prompt="a dog"))
    with pytest.raises(InvalidValueError, match="label must be an integer 0..9, got 10"):
        registry.resolve(model("tiny", label=10))


def test_missing_diffusers_is_one_line_and_the_core_never_imports_it(monkeypatch):
    import subprocess
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(RrrdslError, match=r"diffusers models need diffusers: install rrrdsl\[diffusers\]"):
        loading.require("diffusers")
    code = "import sys, rrrdsl.zoo.diffusers.loading as l; from rrrdsl.models import registry; registry.load_zoo(); assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rrr_check_and_run_name_a_pipeline_with_model(pipelines, isolated_registry, tmp_path, capsys):
    from rrrdsl.cli import main

    script = tmp_path / "labels.rrr"
    script.write_text('p = model("tiny", label=3) ** 2 / model("tiny")\nsample p using reverse n=4 seed=0 -> "p.npz"\n')
    flags = ["--model", f"tiny={pipelines['labels']}", "--levels", "10", "--out", str(tmp_path / "out")]
    assert main(["check", str(script), *flags]) == 0
    assert registry.resolve(model("tiny")).backbone._denoiser is None  # rrr check reads no weights
    assert main(["run", str(script), *flags, "--quiet"]) == 0
    with numpy.load(tmp_path / "out" / "p.npz") as saved:
        assert saved["x"].shape == (4, 64)
    script.write_text('p = model("tiny", prompt="a dog")\nsample p using ula n=4\n')
    capsys.readouterr()
    assert main(["check", str(script), *flags]) == 1
    assert f"{script}:2:1: model(\"tiny\") takes no argument 'prompt'" in capsys.readouterr().out
    assert main(["check", str(script), "--model", "tiny=nowhere"]) == 2
    assert "rrr: error: --model tiny=nowhere: no diffusers pipeline folder at 'nowhere'" in capsys.readouterr().err


class PlainDenoiser(torch.nn.Module):
    """A plain torch module with a UNet's call: ``net(x, t, class_labels=...)``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.label = torch.nn.Embedding(4, 1)

    def forward(self, x, t, class_labels):
        return self.conv(x) * torch.cos(t / 1000)[:, None, None, None] + self.label(class_labels)[:, :, None, None]


@pytest.fixture
def registrations(monkeypatch):
    """The registry with the zoo loaded; names registered in a test are dropped after it."""
    registry.load_zoo()
    monkeypatch.setattr(registry, "_REGISTERED", {kind: dict(table) for kind, table in registry._REGISTERED.items()})
    monkeypatch.setattr(registry, "_CACHE", {})


def test_register_model_takes_a_plain_torch_module(registrations):
    net = PlainDenoiser().eval()
    rrrdsl.register_model("plain", net, shape=(1, 4, 4), levels=20, labels=4)
    target = rrrdsl.compile(model("plain", label=2) ** 2 / model("plain"))
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(7))
    native = native_schedule(loading.require("diffusers").DDPMScheduler().alphas_cumprod, 20)  # the default schedule
    assert target.schedule == native.schedule
    sigma, tau = native.schedule.sigma[9].float(), torch.full((5,), float(native.timesteps[9]))
    with torch.no_grad():
        eps = [net(x.reshape(5, 1, 4, 4), tau, torch.full((5,), label)).reshape(5, 16) for label in (2, 3)]
    assert torch.allclose(target.score(x, 9), -(2 * eps[0] - eps[1]) / sigma, atol=1e-5)
    with pytest.raises(InvalidValueError, match="label must be an integer 0..2, got 3"):
        rrrdsl.compile(model("plain", label=3))
    with pytest.raises(InvalidValueError, match="takes the options shape only with a torch module"):
        rrrdsl.register_model("f", lambda schedule: None, "a factory", shape=(1, 4, 4))


def test_the_motivating_example_runs_on_a_tiny_text_pipeline(pipelines, isolated_registry, tmp_path):
    from rrrdsl.cli import main
    from rrrdsl.lang.parse import parse

    script = Path(__file__).resolve().parents[1] / "examples" / "your_own" / "sd_composition.rrr"
    assert 'mh="line_integral"' in script.read_text() and parse(script.read_text()).statements
    assert main(["run", str(script), "--model", f"sd={pipelines['prompts']}", "--levels", "12", "--out", str(tmp_path), "--quiet"]) == 0
    for name in ("sd-reverse", "sd-ula", "sd-mala"):
        with numpy.load(tmp_path / f"{name}.npz") as saved:
            assert saved["x"].shape == (4, 128) and numpy.isfinite(saved["x"]).all()


def test_float16_networks_give_float32_scores_close_to_float32_networks(pipelines, isolated_registry):
    rrrdsl.register_diffusers("half", pipelines["labels"], levels=10, dtype="float16")
    rrrdsl.register_diffusers("full", pipelines["labels"], levels=10)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(8))
    half = rrrdsl.compile(model("half", label=3) ** 2 / model("half")).score(x, 5)
    full = rrrdsl.compile(model("full", label=3) ** 2 / model("full")).score(x, 5)
    assert registry.resolve(model("half")).backbone.denoiser.dtype == torch.float16 and half.dtype == torch.float32
    assert (half - full).abs().max() < 1e-2 * full.abs().max()
    with pytest.raises(InvalidValueError, match="dtype must be one of"):
        rrrdsl.register_diffusers("bad", pipelines["labels"], dtype="int8")


def test_retiming_inverts_the_models_alpha_bar():
    alphas_cumprod = diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    full, seven = native_schedule(alphas_cumprod), native_schedule(alphas_cumprod, 7)
    assert retime(full, full.schedule) is full
    assert torch.allclose(retime(full, seven.schedule).timesteps, seven.timesteps, atol=1e-6)  # 0, 166.5, 333, ...
    with pytest.raises(InvalidValueError, match="outside the model's trained range"):
        retime(full, rrrdsl.schedules.cosine(10))  # its last alpha_bar is below the model's alpha_bar(999)


def test_pipelines_on_different_schedules_meet_on_alpha_bar(pipelines, isolated_registry, tmp_path):
    import shutil

    scaled = shutil.copytree(pipelines["labels"], tmp_path / "scaled")
    diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction").save_pretrained(scaled / "scheduler")
    rrrdsl.register_diffusers("lin", pipelines["labels"], levels=10)
    rrrdsl.register_diffusers("sc", scaled, levels=10)
    with pytest.raises(CompileError, match="must share one noise schedule"):
        rrrdsl.compile(model("lin", label=1) * model("sc", label=2))
    with pytest.raises(InvalidValueError, match="alpha_bar 0.9999, outside the model's trained range"):  # SD's scaled-linear starts noisier
        rrrdsl.compile(model("lin", label=1) * model("sc", label=2), schedule=registry.resolve(model("lin")).schedule)
    schedule = registry.resolve(model("sc")).schedule
    target = rrrdsl.compile(model("lin", label=1) * model("sc", label=2), schedule=schedule)
    assert registry.resolve(model("sc", label=2), schedule).backbone is registry.resolve(model("sc")).backbone
    moved = registry.resolve(model("lin", label=1), schedule).backbone
    assert moved.schedule == schedule and moved is not registry.resolve(model("lin")).backbone
    # at its timestep of level k, the linear model's own (log-interpolated) alpha_bar is the level's
    own = moved.native.alphas_cumprod.log()
    below = moved.timesteps.floor().long().clamp(max=998)
    weight = moved.timesteps - below
    assert torch.allclose(((1 - weight) * own[below] + weight * own[below + 1]).exp(), schedule.alpha_bar, rtol=1e-9)
    calls = forward_counter(moved.denoiser)
    target.score(torch.randn(3, 64), 4)
    assert len(calls) == 1
