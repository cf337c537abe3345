"""In-process transformers backend: any vision-language model (and text models for text roles).

    from rlaifv_core.backends.hf import HFBackend
    model = HFBackend.from_spec(ModelSpec(name_or_path="llava-hf/llava-1.5-7b-hf"))
    model.generate([VisualPrompt(img, "Describe the image.")], GenerationSettings(n=4, seed=0))
    model.yes_no(img, ["Is there a dog?", "Is there a cat?"])

Sampling is reproducible *per sample*: sample j of a prompt is drawn with Gumbel noise derived
from (prompt seed, j, step), so it does not depend on batch composition or sharding. The prompt
(image included) is encoded once and its key/value cache is shared by the n samples; yes/no
scoring likewise encodes the image prefix once per image and scores all of its questions on top.
Architectures whose positions are not plain 1-D (Qwen2-VL's M-RoPE) fall back to ordinary
batched forwards/`generate`, with the same seeds and the same answers up to float rounding.
User text is neutralised before rendering (backends/user_text.py); a prompt whose tokens + answer
budget exceed the model's context raises `PromptTooLong` before any work (backends/lengths.py).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..fingerprints import folder_fingerprint, hub_fingerprint
from ..seeds import mix_seed
from . import memory
from .base import Backend, ChatReply, GenerationSettings, VisualPrompt, YesNo
from .lengths import check_room, context_length
from .sampler import sample_tokens
from .processors import load_processor
from .templates import encode_texts, encode_with_answers, first_answer_token, render_chat, render_turn, text_ids
from .user_text import model_markers, neutralise
from .yesno import MassAlarm, tally, template_answer_ids

log = logging.getLogger(__name__)

#: model types whose rotary positions depend on the image grid: no shared-prefix fast path
_MROPE_TYPES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v"}


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def use_cpu_threads() -> int:
    """Intra-op threads for CPU inference: `RLAIFV_TORCH_THREADS`, else every CPU this process may use.

    Set explicitly because float reductions depend on the thread count, and worker processes of a
    cluster start with OMP_NUM_THREADS=1 (Dask's nanny sets it): with the same count everywhere,
    the thread, Dask and Ray runners of one machine compute the same bits (tests/test_scale_out.py)."""
    threads = int(os.environ.get("RLAIFV_TORCH_THREADS") or len(os.sched_getaffinity(0)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _one_call_at_a_time(method):
    """One public call per backend at a time: a fast tokenizer's padding is state every call sets, so
    concurrent shards sharing one labeler got each other's (an unpadded batch, "Unable to create tensor")."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._calls:
            return method(self, *args, **kwargs)

    return call


class HFBackend(Backend):
    """A transformers model (vision-language or text-only) in this process."""

    def __init__(self, model, processor, *, name: str, fingerprint: str, is_vlm: bool, batch_size: int = 16):
        self.model = memory.track(model.eval(), f"hf:{name}")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.is_vlm = is_vlm
        self.batch_size = batch_size
        self.name = name
        self.fingerprint = fingerprint
        self.identity = {"backend": "hf", "model": name, "served_model": name, "fingerprint": fingerprint}
        self.device = next(model.parameters()).device
        model_type = getattr(model.config, "model_type", "")
        self.shared_prefix = model_type not in _MROPE_TYPES
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._answer_ids: tuple[list[int], list[int]] | None = None
        self._markers: tuple[str, ...] | None = None  # user text's forbidden markers (backends/user_text.py)
        self.context = context_length(model.config, self.tokenizer)  # tokens; None: unknown (lengths.py)
        #: counted low P(yes)+P(no) questions (logged past a share; the judge stage raises on nearly all)
        self.yes_no_alarm = MassAlarm(name)
        self._calls = threading.RLock()

    @property
    def yes_no_ids(self) -> tuple[list[int], list[int]]:
        """(yes ids, no ids): the first token of the assistant turn for each surface form, read from
        this model's chat template (see backends/yesno.py)."""
        if self._answer_ids is None:
            def first(form: str):
                return first_answer_token(self.processor, "Is there a cat?", form, with_image=self.is_vlm,
                                          is_vlm=self.is_vlm, name=self.name)

            yes, no = template_answer_ids(first)
            if not yes or not no:
                raise ValueError(f"{self.name}: no token of its chat template's assistant turn spells "
                                 f"yes/no (found yes {yes}, no {no}); it cannot be a labeler")
            self._answer_ids = (yes, no)
        return self._answer_ids

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec, path: str | os.PathLike | None = None) -> "HFBackend":
        """Load `spec.name_or_path` (or an explicit local `path`: `rlaifv_core.models` passes the folder
        a schemed name such as `shapes:policy` stands for). Safetensors only."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        source = str(path or spec.name_or_path)
        local = Path(source)
        if local.is_dir():
            weights = list(local.glob("*.safetensors"))
            pickles = list(local.glob("*.bin")) + list(local.glob("*.pt")) + list(local.glob("*.pth"))
            if not weights and pickles:
                raise ValueError(
                    f"{source}: only pickle weights ({pickles[0].name}); this project loads safetensors "
                    "only. Convert them once with `save_pretrained(..., safe_serialization=True)`."
                )
        device = pick_device(spec.device)
        if device.type == "cpu":
            use_cpu_threads()
        dtype = pick_dtype(spec.dtype, device)
        common = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        config = AutoConfig.from_pretrained(source, **common)
        is_vlm = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        model_cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
        model = model_cls.from_pretrained(source, dtype=dtype, use_safetensors=True, **common).to(device)
        processor = load_processor(source, **common) if is_vlm else AutoTokenizer.from_pretrained(source, **common)
        tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        fingerprint = folder_fingerprint(local) if local.is_dir() else hub_fingerprint(source, spec.revision)
        return cls(model, processor, name=source, fingerprint=fingerprint, is_vlm=is_vlm, batch_size=spec.batch_size)

    # -- prompts --------------------------------------------------------------------------------
    def neutralises(self, text: str) -> bool:
        """Whether `text` holds this model's special tokens or turn markers (backends/user_text.py)."""
        if self._markers is None:
            self._markers = model_markers(self.processor, is_vlm=self.is_vlm)
        return neutralise(text, self._markers)[1]

    def clean(self, text: str) -> str:
        """User text with this model's special tokens and turn markers removed."""
        return neutralise(text, self._markers)[0] if self.neutralises(text) else text

    def render(self, question: str, answer: str | None = None, with_image: bool = True) -> str:
        answer = None if answer is None else self.clean(answer)
        return render_turn(self.processor, self.clean(question), answer, with_image=with_image and self.is_vlm,
                           is_vlm=self.is_vlm)

    def check_room(self, texts: Sequence[str], images, budget: int) -> None:
        """PromptTooLong naming every rendered prompt whose tokens + budget exceed the context."""
        check_room(self.name, self.encode, texts, images, budget, self.context, self.batch_size)

    def encode(self, texts: Sequence[str], images: Sequence[Image.Image | None] | None, padding_side: str = "left"):
        return encode_texts(self.processor, texts, images if self.is_vlm else None, self.device, padding_side)

    @property
    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(self.model.generation_config, "eos_token_id", None)
        ids |= set(extra if isinstance(extra, list) else [extra])
        return {i for i in ids if i is not None}

    def _chunks(self, items: Sequence, size: int | None = None):
        size = size or self.batch_size
        for start in range(0, len(items), size):
            yield start, items[start:start + size]

    # -- generation -----------------------------------------------------------------------------
    @_one_call_at_a_time
    @torch.inference_mode()
    def generate(self, prompts: Sequence[VisualPrompt], settings: GenerationSettings,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        """settings.n answers per prompt. seeds[i] is prompt i's seed (default: settings.seed + i)."""
        if seeds is None:
            seeds = [settings.seed + i for i in range(len(prompts))]
        self.check_room([self.render(p.question, with_image=p.image is not None) + self.clean(p.prefix) for p in prompts],
                        [p.image for p in prompts], settings.max_new_tokens)
        if settings.num_beams > 1:
            return self._generate_beams(prompts, settings)
        out: list[list[str]] = []
        per_call = max(1, self.batch_size // max(1, settings.n)) if self.batch_size >= settings.n else 1
        for start, chunk in self._chunks(prompts, per_call):
            chunk_seeds = seeds[start:start + len(chunk)]
            out.extend(self._sample_chunk(chunk, chunk_seeds, settings))
        return out

    def _sample_chunk(self, prompts, seeds, settings: GenerationSettings) -> list[list[str]]:
        # a prefix is the start of the assistant turn: the model continues it
        texts = [self.render(p.question, with_image=p.image is not None) + self.clean(p.prefix) for p in prompts]
        batch = self.encode(texts, [p.image for p in prompts], padding_side="left")
        n = settings.n
        row_seeds = torch.tensor([mix_seed(seed, j) for seed in seeds for j in range(n)], dtype=torch.long)
        if not self.shared_prefix:
            return self._sample_with_generate(batch, row_seeds, settings, len(prompts))
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        outputs = self.model(**batch, position_ids=positions, use_cache=True)
        cache = _cache_of(outputs)
        # The prompt and image were encoded once; the n samples share that key/value cache.
        cache.batch_repeat_interleave(n)
        logits = outputs.logits[:, -1, :].repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        next_pos = positions[:, -1:].repeat_interleave(n, dim=0) + 1
        eos = torch.tensor(sorted(self._eos_ids), device=self.device)
        pad = self.tokenizer.pad_token_id
        finished = torch.zeros(len(row_seeds), dtype=torch.bool, device=self.device)
        tokens = []
        for step in range(settings.max_new_tokens):
            chosen = sample_tokens(logits, settings, row_seeds, step).to(self.device)
            chosen = torch.where(finished, torch.full_like(chosen, pad), chosen)
            tokens.append(chosen)
            finished |= torch.isin(chosen, eos)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            outputs = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos,
                                 use_cache=True, **{self._cache_kwarg: cache})
            cache = _cache_of(outputs)
            logits = outputs.logits[:, -1, :]
            next_pos = next_pos + 1
        return self._decode_rows(torch.stack(tokens, dim=1) if tokens else None, len(prompts), n)

    def _sample_with_generate(self, batch, row_seeds, settings, num_prompts) -> list[list[str]]:
        from transformers import LogitsProcessor, LogitsProcessorList

        backend_settings = settings

        class _SeededGumbel(LogitsProcessor):
            def __call__(self, input_ids, scores):
                step = input_ids.shape[1] - prompt_len
                noisy = sample_tokens(scores, backend_settings, row_seeds, step)
                out = torch.full_like(scores, float("-inf"))
                return out.scatter(-1, noisy[:, None].to(scores.device), 0.0)

        n = settings.n
        prompt_len = batch["input_ids"].shape[1]
        # The model expands its own inputs for the n samples (num_return_sequences): pixel_values,
        # image_grid_thw, image sizes … each in its own layout (Qwen2-VL's are flattened patches).
        # Rows come out prompt-major, as row_seeds are. The processor leaves one token at 0 and all
        # others at -inf, so "sampling" (temperature 1, no top-k/p) picks exactly that token.
        generated = self.model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_beams=1,
                                        num_return_sequences=n, max_new_tokens=settings.max_new_tokens,
                                        logits_processor=LogitsProcessorList([_SeededGumbel()]),
                                        pad_token_id=self.tokenizer.pad_token_id)
        return self._decode_rows(generated[:, prompt_len:], num_prompts, n)

    def _generate_beams(self, prompts, settings: GenerationSettings) -> list[list[str]]:
        out = []
        for _, chunk in self._chunks(prompts):
            texts = [self.render(p.question, with_image=p.image is not None) for p in chunk]
            batch = self.encode(texts, [p.image for p in chunk], padding_side="left")
            generated = self.model.generate(**batch, do_sample=False, num_beams=settings.num_beams,
                                            num_return_sequences=settings.n, max_new_tokens=settings.max_new_tokens,
                                            pad_token_id=self.tokenizer.pad_token_id)
            out.extend(self._decode_rows(generated[:, batch["input_ids"].shape[1]:], len(chunk), settings.n))
        return out

    def _decode_rows(self, tokens: torch.Tensor | None, num_prompts: int, n: int) -> list[list[str]]:
        eos = self._eos_ids
        texts = []
        for row in (tokens.tolist() if tokens is not None else [[] for _ in range(num_prompts * n)]):
            cut = next((i for i, t in enumerate(row) if t in eos), len(row))
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return [texts[i * n:(i + 1) * n] for i in range(num_prompts)]

    # -- yes/no scoring -------------------------------------------------------------------------
    def _yes_no_from_logits(self, logits: torch.Tensor) -> list[YesNo]:
        yes, no = self.yes_no_ids
        ids = yes + no
        texts = self.tokenizer.convert_ids_to_tokens(ids)
        probs = logits.float().softmax(-1)[:, ids].tolist()
        return [tally(zip(texts, row)) for row in probs]

    @_one_call_at_a_time
    @torch.inference_mode()
    def yes_no(self, image: Image.Image | None, questions: Sequence[str]) -> list[YesNo]:
        """P(yes) vs P(no) of the first answer token (the template's yes/no forms, softmax over the
        vocabulary); low P(yes)+P(no) is counted in `yes_no_alarm`."""
        self.check_room([self.render(q, with_image=image is not None) for q in questions],
                        [image] * len(questions) if image is not None else None, 1)
        results = self._yes_no(image, questions) if questions else []
        self.yes_no_alarm.record(results)
        return results

    def _yes_no(self, image, questions: Sequence[str]) -> list[YesNo]:
        texts = [self.render(q, with_image=image is not None) for q in questions]
        if not self.shared_prefix:
            return self.yes_no_reference(image, questions, batched=True)
        ids = [text_ids(self.tokenizer, t) for t in texts]
        common = 0
        while all(len(seq) > common + 1 and seq[common] == ids[0][common] for seq in ids):
            common += 1
        prefix_text_ids = ids[0][:common]
        # Encode the shared prefix (system text + image) once; every question reuses its cache.
        prefix_text = self.tokenizer.decode(prefix_text_ids, skip_special_tokens=False)
        if text_ids(self.tokenizer, prefix_text) != prefix_text_ids:  # does not re-tokenize to itself
            return self.yes_no_reference(image, questions, batched=True)
        prefix = self.encode([prefix_text], [image], padding_side="left")
        if image is not None and self.is_vlm and not self._prefix_holds_image(prefix, texts[0], image):
            return self.yes_no_reference(image, questions, batched=True)
        prefix_out = self.model(**prefix, use_cache=True)
        prefix_len = prefix["input_ids"].shape[1]
        results: list[YesNo] = []
        for _, chunk in self._chunks(list(range(len(questions))), max(self.batch_size, 64)):
            suffixes = [ids[i][common:] for i in chunk]
            width = max(len(s) for s in suffixes)
            pad = self.tokenizer.pad_token_id
            suffix_ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=self.device)
            suffix_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in suffixes], device=self.device)
            cache = copy.deepcopy(_cache_of(prefix_out))
            cache.batch_repeat_interleave(len(chunk))
            mask = torch.cat([prefix["attention_mask"].repeat(len(chunk), 1), suffix_mask], dim=1)
            positions = prefix_len + torch.arange(width, device=self.device)[None, :].repeat(len(chunk), 1)
            out = self.model(input_ids=suffix_ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, **{self._cache_kwarg: cache})
            last = torch.tensor([len(s) - 1 for s in suffixes], device=self.device)
            results.extend(self._yes_no_from_logits(out.logits[torch.arange(len(chunk)), last]))
        return results

    def _prefix_holds_image(self, prefix, full_text: str, image) -> bool:
        image_token = getattr(self.processor, "image_token_id", None) or getattr(self.model.config, "image_token_id", None)
        if image_token is None:
            return False
        full = self.encode([full_text], [image])
        return int((prefix["input_ids"] == image_token).sum()) == int((full["input_ids"] == image_token).sum())

    @_one_call_at_a_time
    @torch.inference_mode()
    def yes_no_reference(self, image: Image.Image | None, questions: Sequence[str], batched: bool = False) -> list[YesNo]:
        """The original's way: one greedy one-token `generate` per question (batched=False), or a
        plain batched forward of full prompts (batched=True). Used as fallback and as the check."""
        results: list[YesNo] = []
        texts = [self.render(q, with_image=image is not None) for q in questions]
        size = self.batch_size if batched else 1
        for _, chunk in self._chunks(texts, size):
            batch = self.encode(chunk, [image] * len(chunk) if image is not None else None, padding_side="left")
            if batched:
                logits = self.model(**batch).logits[:, -1, :]
            else:
                generated = self.model.generate(**batch, max_new_tokens=1, do_sample=False, num_beams=1,
                                                output_scores=True, return_dict_in_generate=True,
                                                pad_token_id=self.tokenizer.pad_token_id)
                logits = generated.scores[0]
            results.extend(self._yes_no_from_logits(logits))
        return results

    # -- log-probabilities of given answers ----------------------------------------------------------
    @_one_call_at_a_time
    @torch.inference_mode()
    def answer_logprobs(self, prompts: Sequence[VisualPrompt], answers: Sequence[str]) -> list[list[float]]:
        """Per-token log π(y_t | x, y_<t) over the answer's tokens (the template's end-of-turn
        tokens included, as DPO counts them)."""
        out: list[list[float]] = []
        for start, chunk in self._chunks(list(zip(prompts, answers))):
            batch, answer_masks = self.encode_with_answers([p for p, _ in chunk], [a for _, a in chunk])
            logits = self.model(**batch).logits.float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = batch["input_ids"][:, 1:]
            token_logps = logps.gather(-1, targets[..., None]).squeeze(-1)
            for row, mask in zip(token_logps, answer_masks[:, 1:]):
                out.append(row[mask.bool()].tolist())
        return out

    @_one_call_at_a_time
    def encode_with_answers(self, prompts: Sequence[VisualPrompt], answers: Sequence[str]):
        prompts = [VisualPrompt(p.image, self.clean(p.question)) for p in prompts]
        answers = [self.clean(a) for a in answers]
        return encode_with_answers(self.processor, prompts, answers, self.device, self.is_vlm, name=self.name)

    # -- text chat (splitter / rewriter roles) ----------------------------------------------------
    @_one_call_at_a_time
    @torch.inference_mode()
    def chat(self, messages: list[dict], *, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 512, seed: int = 0) -> ChatReply:
        messages = [{**m, "content": self.clean(m["content"])} if isinstance(m.get("content"), str) else m
                    for m in messages]
        text = render_chat(self.processor, messages, is_vlm=self.is_vlm, name=self.name)
        self.check_room([text], None, max_new_tokens)
        batch = self.encode([text], None, padding_side="left")
        settings = GenerationSettings(n=1, temperature=temperature, top_p=top_p, top_k=None,
                                      max_new_tokens=max_new_tokens, seed=seed)
        row_seeds = torch.tensor([mix_seed(seed, 0)], dtype=torch.long)
        reply = self._sample_with_generate(batch, row_seeds, settings, 1)[0][0]
        return ChatReply(text=reply, model=self.name)


def _cache_of(outputs):
    """The key/value cache of a forward's outputs (`cache` in transformers ≥ 5.2x, else the old name)."""
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values
