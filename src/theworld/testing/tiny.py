"""Tiny random Gemma 3 and Cosmos-style VAE checkpoints, built offline and seeded, so tests and the
demo run the real loading code without downloads: a Gemma-style BPE tokenizer (Gemma's special and
reserved `<unusedN>` tokens), its chat template, a tiny `Gemma3ForConditionalGeneration` and a tiny
`AutoencoderKLWan` with the Cosmos latent layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from theworld.testing.gemma import GemmaSpec, gemma3_config

logger = logging.getLogger(__name__)


SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
    "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
] + [f"<unused{i}>" for i in range(8)]  # fmt: skip
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
_IMAGE_TOKENS = {"boi": "<start_of_image>", "eoi": "<end_of_image>", "image": "<image_soft_token>"}

# Gemma 3's chat template in spirit: turns marked <start_of_turn>role ... <end_of_turn>, a system
# message folded into the first user turn, images as <start_of_image>, BOS written by the template.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_CORPUS_WORDS = (
    "the a an is are was of to in on at and or not yes no true false left right up down toward away "
    "ball square circle red blue green yellow object objects moving moves move which way what where "
    "happens next will it reach hit wall within steps closer farther image picture clip video frame "
    "describe this scene there one two three four five more less than near far behind front above "
    "below between options answer with option question statement about region depth distance meters "
    "how many tall short big small wide thin direction clock o'clock person car dog cat table chair"
).split()


TinyGemmaSpec = GemmaSpec  # the tiny model's sizes are `GemmaSpec`'s defaults


@dataclass
class TinyVAESpec:
    base_dim: int = 8
    z_dim: int = 16
    num_res_blocks: int = 1
    seed: int = 0
    calibration_images: int = 32
    calibration_size: int = 64


def corpus() -> list[str]:
    """A deterministic training corpus for the tiny tokenizer."""
    lines = [" ".join(_CORPUS_WORDS[i : i + 7]) for i in range(0, len(_CORPUS_WORDS), 3)]
    lines += [w.capitalize() + "?" for w in _CORPUS_WORDS] + [f"{w}." for w in _CORPUS_WORDS]
    lines += ["0 1 2 3 4 5 6 7 8 9 10 100 1.5 2.0", "Options: left, right.", "Answer with one of the options."]
    return lines * 3


def build_tokenizer(vocab_size: int = 1024):
    """A Gemma-style BPE tokenizer (byte fallback, '▁' for spaces) with Gemma's special tokens."""
    import transformers
    from transformers import GemmaTokenizer

    from theworld.processing.tokens import add_special_tokens_keeping

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + BYTE_TOKENS, show_progress=False
    )
    backend.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    image_tokens = {f"{name}_token": token for name, token in _IMAGE_TOKENS.items()}
    # transformers 5: GemmaTokenizer builds Gemma's BPE pipeline itself
    if int(transformers.__version__.split(".")[0]) >= 5:
        tokenizer = GemmaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True, extra_special_tokens=image_tokens)
    else:  # transformers 4.x: GemmaTokenizer needs sentencepiece; the fast one takes the same pipeline
        from transformers import GemmaTokenizerFast

        tokenizer = GemmaTokenizerFast(
            tokenizer_object=_gemma_bpe_pipeline(model["vocab"], merges),
            add_bos_token=True,
            extra_special_tokens=image_tokens,
            unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", mask_token="<mask>",
        )  # fmt: skip
    add_special_tokens_keeping(tokenizer, ["<start_of_turn>", "<end_of_turn>"] + [f"<unused{i}>" for i in range(8)])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _gemma_bpe_pipeline(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Gemma's fast-tokenizer pipeline (as transformers 5's `GemmaTokenizer` builds it), for 4.x."""
    from tokenizers import decoders

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.normalizer = normalizers.Replace(" ", "▁")
    return backend


def build_gemma_config(tokenizer, spec: TinyGemmaSpec | None = None):
    """The tiny Gemma 3's config, with the token ids of its tokenizer."""
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _IMAGE_TOKENS.items()}
    return gemma3_config(spec or TinyGemmaSpec(), pad=tokenizer.pad_token_id, bos=tokenizer.bos_token_id,
                         eos=tokenizer.eos_token_id, **ids)  # fmt: skip


def build_gemma_processor(tokenizer, spec: TinyGemmaSpec | None = None):
    """Plain Gemma 3 processor for the tiny model (PIL image processor: no torchvision here)."""
    from transformers import Gemma3Processor

    try:  # transformers 5 without torchvision: use the PIL processor directly
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    except ImportError:  # transformers 4.x: the default (slow) processor is the PIL/numpy one
        from transformers import Gemma3ImageProcessor as Gemma3ImageProcessorPil

    spec = spec or TinyGemmaSpec()
    image_processor = Gemma3ImageProcessorPil(
        size={"height": spec.vision_image_size, "width": spec.vision_image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=spec.mm_tokens_per_image,
    )


def make_tiny_gemma(output_dir: str | Path, spec: TinyGemmaSpec | None = None) -> Path:
    """Write a tiny random Gemma 3 checkpoint (weights, tokenizer, chat template, processor)."""
    from transformers import Gemma3ForConditionalGeneration

    from theworld.model.compat import use_portable_key_layout

    spec = spec or TinyGemmaSpec()
    out = Path(output_dir)
    tokenizer = build_tokenizer(spec.vocab_size)
    config = build_gemma_config(tokenizer, spec)
    torch.manual_seed(spec.seed)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():
        # Gemma zero-initialises this projection; without values the image would not affect logits.
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        proj.normal_(0.0, 0.5 / proj.shape[0] ** 0.5)
    use_portable_key_layout(model)
    model.save_pretrained(out)
    build_gemma_processor(tokenizer, spec).save_pretrained(out)
    _make_config_portable(out)
    logger.info("Wrote tiny Gemma 3 to %s", out)
    return out


def _make_config_portable(out: Path) -> None:
    """Like a Gemma 3 checkpoint from the Hub, readable by transformers 4.57 and 5 alike: 4.x's rope
    fields next to 5.x's `rope_parameters`, and the dict form of `extra_special_tokens`."""
    from theworld.model.configuration import add_legacy_rope_fields
    from theworld.processing.processor import make_tokenizer_config_portable

    config_file = out / "config.json"
    config_file.write_text(json.dumps(add_legacy_rope_fields(json.loads(config_file.read_text())), indent=2) + "\n")
    make_tokenizer_config_portable(out)


def calibration_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 1, size, size) in [-1, 1]: plain backgrounds with a few random discs and squares.

    Generic scenes, drawn independently of any dataset the model is later trained or tested on.
    """
    from PIL import Image, ImageDraw

    rng = torch.Generator().manual_seed(seed)

    def colour() -> tuple[int, int, int]:
        return tuple(int(v) for v in torch.randint(0, 256, (3,), generator=rng))

    images = []
    for _ in range(n):
        image = Image.new("RGB", (size, size), colour())
        draw = ImageDraw.Draw(image)
        for _ in range(int(torch.randint(1, 4, (1,), generator=rng))):
            x, y = (int(v) for v in torch.randint(0, size, (2,), generator=rng))
            r = int(torch.randint(size // 16 + 1, size // 6 + 2, (1,), generator=rng))
            shape = draw.ellipse if torch.rand(1, generator=rng) < 0.5 else draw.rectangle
            shape([x - r, y - r, x + r, y + r], fill=colour())
        images.append(torch.from_numpy(__import__("numpy").asarray(image, dtype="float32")))
    pixels = torch.stack(images).permute(0, 3, 1, 2) / 127.5 - 1.0  # (n, 3, H, W)
    return pixels.unsqueeze(2)


@torch.no_grad()
def latent_statistics(vae, pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the VAE's latent mode over `pixels`, as Cosmos's config records."""
    latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(16)])
    return latents.mean((0, 2, 3, 4)).tolist(), latents.std((0, 2, 3, 4)).tolist()


def make_tiny_vae(output_dir: str | Path, spec: TinyVAESpec | None = None) -> Path:
    """Write a tiny random `AutoencoderKLWan` in a Cosmos-style layout (`<dir>/vae/`). With Cosmos's
    `latents_mean`/`latents_std` a random VAE's normalised latents are ~97% constant offset and the
    world path cannot learn from them, so its statistics are measured here on calibration scenes."""
    from diffusers import AutoencoderKLWan

    spec = spec or TinyVAESpec()
    out = Path(output_dir)
    torch.manual_seed(spec.seed)
    vae = AutoencoderKLWan(
        base_dim=spec.base_dim, z_dim=spec.z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=spec.num_res_blocks
    ).eval()
    mean, std = latent_statistics(vae, calibration_images(spec.calibration_images, spec.calibration_size, spec.seed))
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(out / "vae")
    logger.info("Wrote tiny Cosmos-style VAE to %s", out / "vae")
    return out


TINY_WORLD_SETTINGS = dict(world_image_size=64, world_tokens_per_frame=16, world_num_frames=9)
