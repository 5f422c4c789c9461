"""Image prompts, blends and descriptions on the embedded model, fetched from a real local HTTP server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis
from PIL import Image

from core import jobs, queue
from core.models import BUILTIN_EMBEDDED, ModelRegistry, embedded_model, load_registry, tiny_model
from core.prompt import parse
from core.settings import ImageSettings, WorkerSettings
from model import checker
from model.data import Obj, Scene, parse_caption, render
from worker import kinds
from worker.context import Context
from worker.describe import CaptionDescriber, DescriberUnavailable, ShapesDescriber, load
from worker.engine import Engine
from worker.grid import compose_grid

from .image_server import png, serving
from .worker_helpers import Outcomes, run_in_process

REGISTRY = load_registry(BUILTIN_EMBEDDED)


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The embedded model on the CPU."""
    return Engine.load(embedded_model(), device="cpu")


def drawn(colour: str, shape: str, background: str, position: str = "centre") -> Image.Image:
    """A scene drawn by the training data's renderer (not by the model)."""
    return Image.fromarray(render(Scene(background, (Obj(shape, colour, position),))))


def grid_of(engine: Engine, redis_conn: redis.Redis, text: str, rules) -> list[Image.Image]:
    """The four images of an `/imagine` of `text` as the worker makes them (`worker.kinds.make`)."""
    [spec] = parse(text, REGISTRY, image_rules=rules)
    ctx = Context(conn=redis_conn, engine=engine, model=embedded_model(), settings=WorkerSettings(device="cpu"),
                  worker_name="test", image_rules=rules, describer=ShapesDescriber())
    hooks = kinds.Hooks(lambda *_: None, lambda: False, 1.5)
    return list(kinds.make(ctx, jobs.new_job_id(), "grid", spec, {}, hooks).later)


def test_an_image_prompt_of_a_green_triangle_on_a_white_background(engine: Engine, redis_conn: redis.Redis) -> None:
    """A green triangle on gray as the image, "on a white background" as the text: green triangles on white, read
    by the checker, in at least three of the four (green triangles are held out of the model's training)."""
    with serving({"/tri.png": png(drawn("green", "triangle", "gray"))}) as (base, rules):
        images = grid_of(engine, redis_conn, f"{base}/tri.png on a white background --seed 5 --quality .5", rules)
    readings = [checker.check(image) for image in images]
    right = [r.background == "white" and [(o.colour, o.shape) for o in r.objects] == [("green", "triangle")]
             for r in readings]
    assert sum(right) >= 3, readings


def test_a_blend_of_two_images_mixes_them(engine: Engine, redis_conn: redis.Redis) -> None:
    """A blend (images, no text) of a red circle on blue and a red circle on yellow keeps a red circle."""
    files = {"/a.png": png(drawn("red", "circle", "blue")), "/b.png": png(drawn("red", "circle", "yellow"))}
    with serving(files) as (base, rules):
        images = grid_of(engine, redis_conn, f"{base}/a.png {base}/b.png --seed 3 --quality .5", rules)
    readings = [checker.check(image) for image in images]
    assert sum([(o.colour, o.shape) for o in r.objects][:1] == [("red", "circle")] for r in readings) >= 3, readings


def test_describe_of_a_red_circle_on_blue_grid_names_red_circle_and_blue(engine: Engine) -> None:
    """/describe of the model's "a red circle on a blue background" grid: four different prompts in the language
    of its training captions, each naming red, circle and blue."""
    [spec] = parse("a red circle on a blue background --seed 7 --quality .5", REGISTRY)
    grid = compose_grid(engine.render(spec))
    prompts = ShapesDescriber().prompts(grid, seed=1)
    assert len(set(prompts)) == 4, prompts
    for text in prompts:
        scene = parse_caption(text)
        assert scene is not None and scene.background == "blue", text
        assert [(o.colour, o.shape) for o in scene.objects] == [("red", "circle")], text


def test_describe_names_two_objects_and_their_positions() -> None:
    """Two different objects are both named, each with its side."""
    image = Image.fromarray(render(Scene("white", (Obj("square", "blue", "left"), Obj("star", "yellow", "right")))))
    for text in ShapesDescriber().prompts(image, seed=2):
        scene = parse_caption(text)
        assert scene is not None and {(o.colour, o.shape, o.position) for o in scene.objects} == {
            ("blue", "square", "left"), ("yellow", "star", "right")}, text


def tiny_blip(folder: Path) -> Path:
    """A randomly initialised BLIP captioner, tiny, saved with its processor as a hub folder would hold it."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "on", "blue", "background"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(text_config={**small, "vocab_size": len(words), "max_position_embeddings": 64,
                                     "bos_token_id": 2, "sep_token_id": 3, "pad_token_id": 0},
                        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=32)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_a_configured_captioner_is_loaded_and_answers_prompts(tmp_path: Path) -> None:
    """IMAGINE_IMAGE_CAPTIONER: a transformers image-to-text model (a tiny random BLIP here) is loaded once and
    answers one to four prompts and a subject, as text (random weights: what they say is noise)."""
    describer = load(ImageSettings(captioner=str(tiny_blip(tmp_path))), embedded_model())
    assert isinstance(describer, CaptionDescriber) and describer.name == str(tmp_path)
    prompts = describer.prompts(drawn("red", "circle", "blue"), seed=1)
    assert 1 <= len(prompts) <= 4 and all(isinstance(p, str) and p for p in prompts)
    assert isinstance(describer.subject(drawn("red", "circle", "blue")), str)


def test_a_captioner_that_cannot_load_is_one_clear_error(tmp_path) -> None:
    """A configured captioning model that cannot be loaded is refused at start, naming the setting."""
    settings = ImageSettings(captioner=str(tmp_path / "missing"))
    with pytest.raises(DescriberUnavailable, match="IMAGINE_IMAGE_CAPTIONER"):
        load(settings, embedded_model())
    assert isinstance(load(ImageSettings(), embedded_model()), ShapesDescriber)


def test_a_describe_job_is_taken_before_the_renders_waiting_ahead_of_it(tiny_engine, tiny_spec, redis_conn) -> None:
    """Two grids wait, then a /describe comes: the worker takes the describe job first (its own lane, ahead of fast
    and relax), then the grids in their order."""
    grids = [queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, seed=s), "o") for s in (1, 2)]
    outcomes = Outcomes(redis_conn)
    with serving({"/c.png": png(drawn("red", "circle", "blue"))}) as (base, rules):
        [spec] = parse(f"{base}/c.png", ModelRegistry((tiny_model(),)), image_rules=rules)
        described = queue.enqueue(redis_conn, spec, "o", kind="describe")
        run_in_process(redis_conn, tiny_engine, image_rules=rules, describer=ShapesDescriber())
    assert outcomes.take(3) == [(described, "done"), (grids[0], "done"), (grids[1], "done")]
    outcomes.close()
