"""The image check on every bad input, good images of each MIME type, and the sim's images."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from aione_probe.checks import CheckContext, CheckSpecError, run_checks, validate_check_spec
from aione_probe.checks.image import decoded_size, image, sniff_mime
from aione_probe.config import GatewayConfig
from aione_probe.errors import FailureKind
from aione_probe.gateway import GatewayClient
from aione_probe.sim import default_sim_config, run_in_thread
from aione_probe.sim.images import dimensions
from aione_probe.suites import Probe, ProbeInstance, load_suite
from aione_probe.types import ChatRequest, CheckResult, CheckValue, Observation, Usage

ROOT = Path(__file__).resolve().parent.parent
USAGE = Usage(prompt_tokens=20, completion_tokens=1300, total_tokens=1320, raw={})


def encode(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, format=fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def obs_with(*urls: str, finish: str | None = "stop", usage: Usage | None = USAGE) -> Observation:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Here you go."}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return Observation(
        gateway="g",
        model="m",
        content="Here you go.",
        content_parts=parts,
        finish_reason=finish,
        usage=usage or Usage(),
    )


def judge(
    obs: Observation, params: dict[str, Any] | None = None, model: str = "gemini-img", **extra: Any
) -> CheckResult:
    probe = Probe(id="p", kind="image", prompt="draw")
    req = ChatRequest(model=model, messages=({"role": "user", "content": "draw"},), extra=extra)
    ctx = CheckContext(instance=ProbeInstance(probe, 0), request=req)
    return image(obs, params or {}, ctx)


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_good_image_of_each_mime_passes(fmt: str, mime: str) -> None:
    data = encode((1024, 1024), fmt)
    res = judge(obs_with(data_url(data, mime)), aspect_ratio="1:1", image_size="1K")
    assert res.value is CheckValue.passed, res.explanation
    meta = res.metadata
    assert (meta["mime"], meta["detected_mime"], meta["width"], meta["height"]) == (
        mime,
        mime,
        1024,
        1024,
    )
    assert meta["bytes"] == len(data) and len(meta["sha256"]) == 64 and meta["reasons"] == []
    assert res.answer == f"{mime} 1024x1024"


def test_gemini_tier_sizes_pass_by_area() -> None:
    # Gemini 3 Pro's 16:9 sizes: the longest side is not 1024/2048, the area is the tier's.
    for size, tier in (((1376, 768), "1K"), ((2752, 1536), "2K")):
        res = judge(obs_with(data_url(encode(size))), aspect_ratio="16:9", image_size=tier)
        assert res.value is CheckValue.passed, res.explanation


def test_tier_from_model_suffix_and_params_override_extra() -> None:
    url = data_url(encode((2048, 2048)))
    assert judge(obs_with(url), model="gemini-3-pro-image-preview-2k").value is CheckValue.passed
    res = judge(obs_with(url), model="gemini-3-pro-image-preview")  # 1K by default
    assert res.value is CheckValue.failed and "1K tier" in res.explanation
    res = judge(obs_with(url), {"image_size": "2K", "aspect_ratio": "1:1"}, image_size="1K")
    assert res.value is CheckValue.passed


@pytest.mark.parametrize(
    ("size", "ratio", "tier", "reason"),
    [
        ((1200, 1000), "1:1", "1K", "aspect ratio 1200x1000 is not 1:1"),
        ((1024, 576), "16:9", "1K", "not the 1K tier"),
        ((1024, 1024), "1:1", "2K", "not the 2K tier"),
    ],
)
def test_wrong_geometry_fails(size: tuple[int, int], ratio: str, tier: str, reason: str) -> None:
    res = judge(obs_with(data_url(encode(size))), aspect_ratio=ratio, image_size=tier)
    assert res.value is CheckValue.failed
    assert any(reason in r for r in res.metadata["reasons"]), res.metadata["reasons"]


def test_ratio_tolerance_is_two_percent_by_default() -> None:
    inside = judge(obs_with(data_url(encode((1360, 768)))), aspect_ratio="16:9")  # -0.4 %
    outside = judge(obs_with(data_url(encode((1320, 768)))), aspect_ratio="16:9")  # -3.3 %
    assert inside.value is CheckValue.passed and outside.value is CheckValue.failed
    loose = judge(
        obs_with(data_url(encode((1320, 768)))), {"ratio_tolerance": 0.05}, aspect_ratio="16:9"
    )
    assert loose.value is CheckValue.passed


def fails_with(res: CheckResult, text: str) -> None:
    assert res.value is CheckValue.failed
    assert any(text in r for r in res.metadata["reasons"]), res.metadata["reasons"]


def test_no_image_part() -> None:
    fails_with(judge(obs_with()), "content has no image part")


def test_non_image_payloads() -> None:
    fails_with(judge(obs_with(data_url(b"hello world, not a picture"))), "no PNG, JPEG or WebP")
    fails_with(judge(obs_with("https://cdn.example.test/cat.png")), "a link, not inline data")
    fails_with(judge(obs_with("data:image/png,rawbytes")), "not a data URL")
    fails_with(judge(obs_with("data:image/png;base64,****")), "invalid base64")


def test_truncated_base64_and_truncated_image() -> None:
    text = base64.b64encode(encode((64, 64))).decode()
    fails_with(judge(obs_with(f"data:image/png;base64,{text[:-3]}")), "truncated base64")
    half = encode((512, 512), "JPEG")[:400]
    fails_with(judge(obs_with(data_url(half, "image/jpeg"))), "does not decode")


def test_size_cap_applies_before_decoding() -> None:
    res = judge(obs_with(data_url(encode((512, 512)))), {"max_bytes": 100})
    fails_with(res, "too large")
    assert "sha256" not in res.metadata  # never decoded
    huge = "data:image/png;base64," + "A" * (28 * 1024 * 1024)
    res = judge(obs_with(huge))
    fails_with(res, "too large")
    assert res.metadata["bytes"] == 21 * 1024 * 1024


def test_decompression_bomb_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")  # 64 M pixels, a few KB
    fails_with(judge(obs_with(data_url(buf.getvalue()))), "too large")


def test_wrong_mime() -> None:
    res = judge(obs_with(data_url(encode((1024, 1024)), "image/jpeg")), aspect_ratio="1:1")
    fails_with(res, "wrong mime: declared image/jpeg, bytes are image/png")


def test_finish_reason_and_usage_are_required() -> None:
    url = data_url(encode((1024, 1024)))
    fails_with(judge(obs_with(url, finish="length")), "finish_reason 'length'")
    fails_with(judge(obs_with(url, usage=Usage())), "usage not reported")


def test_failed_request_is_unscored() -> None:
    obs = obs_with()
    obs.failure = FailureKind.http_4xx
    assert judge(obs).value is CheckValue.unscored


def test_helpers() -> None:
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_mime(b"GIF89a") is None
    assert decoded_size(8, "==") == 4 and decoded_size(8, "Ab") == 6


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"aspect_ratio": "16x9"}, "aspect_ratio"),
        ({"image_size": "8K"}, "image_size"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"ratio_tolerance": 2}, "ratio_tolerance"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_spec_validation(params: dict[str, Any], param: str) -> None:
    with pytest.raises(CheckSpecError) as info:
        validate_check_spec("image", params)
    assert info.value.param == param


# --- against the simulator over loopback ----------------------------------------------------


def test_sim_dimensions_match_ratio_and_tier() -> None:
    assert dimensions("1:1", "1K") == (1024, 1024)
    w, h = dimensions("16:9", "2K")
    assert abs(w / h / (16 / 9) - 1) < 0.01 and abs((w * h) ** 0.5 / 2048 - 1) < 0.02


async def run_image_suite(sim: Any, model: str) -> list[tuple[Observation, list[CheckResult]]]:
    suite = load_suite(ROOT / "probes" / "image.toml")
    gw = GatewayConfig(name="sim", base_url=sim.base_url, auth="none", requests_per_minute=None)
    out = []
    async with GatewayClient(gw) as client:
        for inst in suite.expand(seed=1):
            req = inst.request(model)
            assert req.stream is False
            obs = (await client.chat(req))[-1]
            out.append((obs, run_checks(inst, obs, CheckContext(inst, req), suite.default_checks)))
    return out


@pytest.mark.parametrize(
    ("model", "mime"),
    [("gemini-3-pro-image-preview", "image/png"), ("gemini-2.5-flash-image", "image/jpeg")],
)
async def test_image_suite_passes_against_the_sim(model: str, mime: str) -> None:
    with run_in_thread(default_sim_config(time_scale=0, seed=1)) as sim:
        runs = await run_image_suite(sim, model)
    assert len(runs) == 4
    for obs, results in runs:
        assert obs.ok and obs.finish_reason == "stop" and obs.content
        by_name = {r.name: r for r in results}
        assert by_name["image"].value is CheckValue.passed, by_name["image"].explanation
        assert by_name["image"].metadata["mime"] == mime
        assert by_name["usage_total"].value is CheckValue.passed


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("truncated_base64", ""),
        ("wrong_mime", "wrong mime"),
        ("no_image", "content has no image part"),
    ],
)
async def test_sim_image_faults_fail_the_check(fault: str, reason: str) -> None:
    config = default_sim_config(time_scale=0, seed=1)
    config.models["gemini-3-pro-image-preview"].image_fault = fault
    with run_in_thread(config) as sim:
        runs = await run_image_suite(sim, "gemini-3-pro-image-preview")
    for obs, results in runs:
        assert obs.ok
        (res,) = [r for r in results if r.name == "image"]
        assert res.value is CheckValue.failed
        if fault == "truncated_base64":
            text = " ".join(res.metadata["reasons"])
            assert "truncated base64" in text or "does not decode" in text, text
        else:
            assert any(reason in r for r in res.metadata["reasons"])


async def test_sim_refuses_streaming_and_serves_tier_by_model_name() -> None:
    msg = ({"role": "user", "content": "A blue square."},)
    with run_in_thread(default_sim_config(time_scale=0, seed=1)) as sim:
        gw = GatewayConfig(name="sim", base_url=sim.base_url, auth="none", requests_per_minute=None)
        async with GatewayClient(gw) as client:
            (streamed,) = await client.chat(
                ChatRequest(model="gemini-3-pro-image-preview", messages=msg, stream=True)
            )
            req = ChatRequest(model="gemini-3-pro-image-preview-2k", messages=msg)
            (obs,) = await client.chat(req)
    assert streamed.failure is FailureKind.http_4xx and streamed.status == 400
    probe = Probe(id="p", kind="image", prompt="A blue square.")
    res = image(obs, {}, CheckContext(ProbeInstance(probe, 0), req))
    assert res.value is CheckValue.passed
    assert (res.metadata["width"], res.metadata["height"]) == (2048, 2048)
