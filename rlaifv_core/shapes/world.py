"""The shapes world: seeded synthetic scenes with exact ground truth, their images and language.

    from rlaifv_core.shapes.world import ShapesWorld
    world = ShapesWorld()
    scene = world.scene(seed=7)
    scene.render().save("scene.png"); print(scene.objects, world.caption(scene))

Design (from the probes in docs/method.md §12): 48-px images on a 3x3 grid of 16-px cells, so
a CLIP patch of 16 px sees exactly one cell and perception is easy. Hallucination lives in the
*language prior*: objects come in partner pairs (a red circle usually brings a blue square), and
the policy's training captions name an absent partner with probability `caption_noise`, as noisy
web captions do. The labeler learns from clean captions, so it can see what the policy imagines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 225),
    "yellow": (235, 205, 40),
}
SHAPES = ("circle", "square", "triangle")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ObjectType = tuple[str, str]  # (colour, shape)
OBJECT_TYPES: tuple[ObjectType, ...] = tuple((c, s) for c in COLOURS for s in SHAPES)

# Six partner pairs, each differing in colour *and* shape, covering all twelve object types once.
PARTNER_PAIRS: tuple[tuple[ObjectType, ObjectType], ...] = (
    (("red", "circle"), ("blue", "square")),
    (("green", "triangle"), ("yellow", "circle")),
    (("blue", "triangle"), ("red", "square")),
    (("yellow", "square"), ("green", "circle")),
    (("red", "triangle"), ("green", "square")),
    (("blue", "circle"), ("yellow", "triangle")),
)
PARTNER: dict[ObjectType, ObjectType] = {a: b for a, b in PARTNER_PAIRS} | {b: a for a, b in PARTNER_PAIRS}

DETAIL_QUESTIONS = (
    "describe the image .",
    "describe the image in detail .",
    "what is in the image ?",
    "what objects are in the picture ?",
)
GRID = 3
CELL = 16
IMAGE_SIZE = GRID * CELL
BACKGROUND = (128, 128, 128)


def object_name(obj: ObjectType) -> str:
    return f"{obj[0]} {obj[1]}"


def canonical_order(objects) -> list[ObjectType]:
    colours, shapes = list(COLOURS), list(SHAPES)
    return sorted(set(objects), key=lambda o: (colours.index(o[0]), shapes.index(o[1])))


@dataclass(frozen=True)
class PlacedObject:
    colour: str
    shape: str
    cell: int  # 0..8, row-major

    @property
    def kind(self) -> ObjectType:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    seed: int
    placed: tuple[PlacedObject, ...]

    @cached_property
    def objects(self) -> frozenset[ObjectType]:
        """The distinct (colour, shape) types present: the ground truth for CHAIR."""
        return frozenset(p.kind for p in self.placed)

    @property
    def missing_partners(self) -> frozenset[ObjectType]:
        """Partners of present objects that are not in the scene: where the prior misleads."""
        return frozenset(PARTNER[o] for o in self.objects) - self.objects

    def render(self) -> Image.Image:
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for obj in self.placed:
            row, col = divmod(obj.cell, GRID)
            x0, y0 = col * CELL + 2, row * CELL + 2
            x1, y1 = x0 + 12, y0 + 12
            fill = COLOURS[obj.colour]
            if obj.shape == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif obj.shape == "square":
                draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=fill)
            else:
                draw.polygon(((x0 + 6, y0), (x1, y1), (x0, y1)), fill=fill)
        return image


@dataclass(frozen=True)
class ShapesWorld:
    """Scene distribution and language. All randomness flows from explicit seeds."""

    max_seeds: int = 2
    partner_prob: float = 0.8
    distractor_prob: float = 0.35
    max_objects: int = 4
    caption_noise: float = 0.6  # P(caption names an absent partner), policy training data only

    # -- scenes ---------------------------------------------------------------------------------
    def scene(self, seed: int) -> Scene:
        rng = random.Random(seed)
        kinds: list[ObjectType] = []
        for _ in range(rng.randint(1, self.max_seeds)):
            seed_obj = rng.choice(OBJECT_TYPES)
            if seed_obj not in kinds:
                kinds.append(seed_obj)
            if rng.random() < self.partner_prob and PARTNER[seed_obj] not in kinds:
                kinds.append(PARTNER[seed_obj])
            if rng.random() < self.distractor_prob:
                distractor = rng.choice(OBJECT_TYPES)
                if distractor not in kinds:
                    kinds.append(distractor)
        kinds = kinds[: self.max_objects]
        cells = rng.sample(range(GRID * GRID), len(kinds))
        return Scene(seed, tuple(PlacedObject(c, s, cell) for (c, s), cell in zip(kinds, cells)))

    def scenes(self, start_seed: int, count: int) -> list[Scene]:
        return [self.scene(start_seed + i) for i in range(count)]

    # -- language -------------------------------------------------------------------------------
    @staticmethod
    def describe(objects) -> str:
        """The canonical sentence naming `objects`: 'there is a red circle , a blue square and …'."""
        names = [f"a {object_name(o)}" for o in canonical_order(objects)]
        if not names:
            return "there is nothing ."
        if len(names) == 1:
            return f"there is {names[0]} ."
        return f"there is {' , '.join(names[:-1])} and {names[-1]} ."

    def caption(self, scene: Scene, rng: random.Random | None = None, noisy: bool = False) -> str:
        """Detailed description. noisy=True adds absent partners as a web caption would."""
        named = set(scene.objects)
        if noisy:
            rng = rng or random.Random(scene.seed)
            for partner in canonical_order(scene.missing_partners):
                if rng.random() < self.caption_noise:
                    named.add(partner)
        return self.describe(named)

    @staticmethod
    def presence_question(obj: ObjectType) -> str:
        return f"is there a {object_name(obj)} in the image ?"

    @staticmethod
    def presence_answer(obj: ObjectType, present: bool) -> str:
        name = object_name(obj)
        return f"yes , there is a {name} ." if present else f"no , there is no {name} ."

    def qa_prompt(self, scene: Scene, rng: random.Random) -> tuple[str, ObjectType]:
        """A question-answering prompt: half about a present object, half about an absent one
        (preferably a missing partner, where the prior pushes toward a wrong 'yes')."""
        if rng.random() < 0.5:
            obj = rng.choice(canonical_order(scene.objects))
        else:
            pool = canonical_order(scene.missing_partners) or canonical_order(set(OBJECT_TYPES) - scene.objects)
            obj = rng.choice(pool)
        return self.presence_question(obj), obj

    def qa_answer(self, scene: Scene, obj: ObjectType, rng: random.Random | None = None, noisy: bool = False) -> str:
        present = obj in scene.objects
        if noisy and not present and obj in scene.missing_partners:
            rng = rng or random.Random(scene.seed)
            present = rng.random() < self.caption_noise
        return self.presence_answer(obj, present)

    def prompts(self, start_seed: int, count: int, detail_share: float = 0.7) -> list[dict]:
        """Prompt records in the pipeline's input format (image in memory, ground truth kept)."""
        records = []
        for scene in self.scenes(start_seed, count):
            rng = random.Random(scene.seed * 7919 + 1)
            if rng.random() < detail_share:
                question, target, task = rng.choice(DETAIL_QUESTIONS), None, "detailed description"
            else:
                question, target = self.qa_prompt(scene, rng)
                task = "question answering"
            records.append({
                "scene": scene,
                "question": question,
                "task": task,
                "target": target,
                "ds_question_id": f"shapes-{scene.seed}",
            })
        return records


def vocabulary() -> list[str]:
    """Every word the world's language (prompts, answers, yes/no questions) can use."""
    words = set(" ".join(DETAIL_QUESTIONS).split())
    words |= set(COLOURS) | set(SHAPES) | set(PLURALS.values()) | set(NUMBER_WORDS)
    words |= set("there is are a an no not yes , . ? and in the image picture is nothing".split())
    words |= set("please answer or object objects what describe detail".split())
    words |= set("user : assistant".split())
    return sorted(words)
