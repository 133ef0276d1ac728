"""Plain words everywhere a user reads (issue 16, item 7 and defect 10), with the tiny model configured.

Every page (Home, Video Q&A, Summaries, OCR, Library, GPU monitor) is driven with AppTest through its usual
steps (a made video analysed, an invoice and an image with no readable text read, the library opened), and every
text it shows (markdown, captions, boxes, labels, help texts, table cells, chart hovers) is checked for
exception class names ("LocalEntryNotFoundError"), internal paths (cache/..., /tmp/..., the uploads folder) and
command-line options ("--enhanced") that a web page has no use for.

Each page's case fails listing what it found.
Also here: the messages' web wording (core.errors.for_web), one download command, the page icon served by the
dashboard itself, the setup script's word about the CPU build of torch, and the memory plan (defect 6).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.conftest import wait_job
from tests.pages.media import make_video, text_image

ROOT = Path(__file__).parents[2]
INVOICE = ["ACME Supplies Ltd", "12 High Street, London", "Invoice No: INV-2041", "Date: 2026-11-30",
           "Bill to: Northwind Traders", "Subtotal 100.00", "VAT 20.00", "Total 120.00 EUR"]

CLASS_NAME = re.compile(r"\b(?:[A-Z][a-z0-9]+)+(?:Error|Exception)\b")
CLI_OPTION = re.compile(r"(?<![\w/-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*\b")
RELATIVE_CACHE = re.compile(r"(?<![\w/.-])cache/\S*")
TMP_PATH = re.compile(r"/tmp/\S+")
SKIP_KEYS = {"id", "formId", "url", "arrowData", "icon", "fragmentId", "deltaPath", "scriptHash", "pageScriptHash",
             "key", "data", "src", "elementHash", "spec"}


def _strings(obj, out: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in SKIP_KEYS:
                _strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _strings(v, out)
    elif isinstance(obj, str) and obj.strip():
        out.append(obj)


def shown_texts(at: AppTest) -> list[str]:
    """Every text of the page a user can read: element bodies, labels, help, placeholders, options, the cells of
    tables and the hover texts and labels of charts."""
    from google.protobuf.json_format import MessageToDict

    out: list[str] = []
    for root in (at.main, at.sidebar):
        for node in root:
            proto = getattr(node, "proto", None)
            if proto is None or node.type == "json":
                # st.json is the result's data exactly as the JSON export holds it (a download, not a message)
                continue
            _strings(MessageToDict(proto), out)
            if node.type == "arrow_data_frame" or node.type == "dataframe":
                try:
                    out += [str(v) for v in node.value.astype(str).to_numpy().ravel()] + list(map(str, node.value.columns))
                except Exception:  # noqa: BLE001 - a table that cannot be read back is not text
                    pass
            spec = getattr(proto, "spec", "")
            if isinstance(spec, str) and spec.startswith("{"):
                fig = json.loads(spec)
                for trace in fig.get("data", []):
                    for k in ("hovertext", "text", "name"):
                        _strings(trace.get(k), out)
                _strings([a.get("text") for a in fig.get("layout", {}).get("annotations", [])], out)
    return out


def offenders(texts: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    """The findings: each text with an exception class name, an internal path or a command-line option."""
    found = []
    for text in texts:
        clean = text
        for ok in allowed:
            clean = clean.replace(ok, "")
        for what, pattern in (("class name", CLASS_NAME), ("command-line option", CLI_OPTION),
                              ("internal path", RELATIVE_CACHE), ("internal path", TMP_PATH)):
            m = pattern.search(clean)
            if m:
                found.append(f"{what} {m.group()!r} in {text[:160]!r}")
    return sorted(set(found))


@pytest.fixture
def tiny_env(app_env: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    return app_env


def _allowed(tiny_env: Path, tiny_model_dir: Path) -> tuple[str, ...]:
    # the configured model folder and the cache folder itself are settings the user gave, said on purpose (Home
    # says where results are kept); anything inside the cache folder (uploads, proxies) is internal
    return (str(tiny_model_dir), str(tiny_env / "cache") + "\n", str(tiny_env / "cache"))


def _check(at: AppTest, allowed: tuple[str, ...]) -> list[str]:
    assert not at.exception, at.exception
    return offenders(shown_texts(at), allowed)


def open_page(name: str) -> AppTest:
    """The dashboard as a user has it (Home.py's navigation, the sidebar), switched to pages/<name>.py."""
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    return at.switch_page(f"pages/{name}.py").run()


def _upload(at: AppTest, key: str, name: str, data: bytes, mime: str) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, mime)).run()
    assert not at.exception, at.exception
    return at


def _no_text_image() -> bytes:
    """Ink but no letters: a smooth grey gradient (OCR finds nothing to read, and says so)."""
    import cv2

    img = np.tile(np.linspace(60, 230, 500, dtype=np.uint8)[None, :, None], (300, 1, 3))
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes()


# ------------------------------------------------------------------ the walk, page by page
def test_home_in_plain_words(tiny_env: Path, tiny_model_dir: Path) -> None:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180).run()
    findings = _check(at, _allowed(tiny_env, tiny_model_dir))
    at.button(key="load_model").click().run()
    findings += _check(at, _allowed(tiny_env, tiny_model_dir))
    assert not findings, findings


def test_ocr_page_in_plain_words(tiny_env: Path, tiny_model_dir: Path) -> None:
    """Defect 10: "try --enhanced or another --lang" on a page with nothing readable."""
    allowed = _allowed(tiny_env, tiny_model_dir)
    at = open_page("ocr")
    findings = _check(at, allowed)
    _upload(at, "ocr_upload", "invoice.png", text_image(INVOICE), "image/png")
    at.button(key="ocr_run").click().run()
    wait_job("ocr:", 120)
    at.run()
    findings += _check(at, allowed)
    assert any("lines**" in m.value for m in at.markdown)
    _upload(at, "ocr_upload", "drawing.png", _no_text_image(), "image/png")
    at.button(key="ocr_run").click().run()
    wait_job("ocr:", 120)
    at.run()
    texts = shown_texts(at)
    findings += _check(at, allowed)
    # the page says nothing was found, with the fix in the page's words (the walk checks no option is named)
    assert any("no text found on this page" in t.lower() for t in texts), texts
    at.selectbox(key="ocr_engine").set_value("vlm").run()
    findings += _check(at, allowed)
    assert not findings, findings


VIDEO_FINDINGS = ""  # filled in when the walk finds something on a page another part of the work owns


def test_video_page_in_plain_words(tiny_env: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    allowed = _allowed(tiny_env, tiny_model_dir)
    at = open_page("video")
    findings = _check(at, allowed)
    _upload(at, "video_upload", "three shots.mp4", make_video(tmp_path / "v.mp4").read_bytes(), "video/mp4")
    findings += _check(at, allowed)
    at.checkbox(key="video_stage_text").uncheck().run()
    at.button(key="video_analyze").click().run()
    wait_job("video:", 120)
    at.run()
    findings += _check(at, allowed)
    assert not findings, findings


def test_summaries_page_in_plain_words(tiny_env: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    allowed = _allowed(tiny_env, tiny_model_dir)
    at = open_page("summaries")
    findings = _check(at, allowed)
    _upload(at, "summary_upload", "talk.mp4", make_video(tmp_path / "t.mp4").read_bytes(), "video/mp4")
    findings += _check(at, allowed)
    assert not findings, findings


def test_library_page_in_plain_words(tiny_env: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The Library after an OCR read and a video opened through the pages (their names, never their copies)."""
    allowed = _allowed(tiny_env, tiny_model_dir)
    ocr = open_page("ocr")
    _upload(ocr, "ocr_upload", "receipt.png", text_image(["Corner Cafe receipt", "Espresso 2.50"]), "image/png")
    ocr.button(key="ocr_run").click().run()
    wait_job("ocr:", 120)
    video = open_page("video")
    _upload(video, "video_upload", "cuts.mp4", make_video(tmp_path / "c.mp4").read_bytes(), "video/mp4")
    at = open_page("library")
    findings = _check(at, allowed)
    assert any("receipt.png" in t for t in shown_texts(at))
    # open each file's stored results (its card's "Details")
    opened = 0
    while True:
        details = [b for b in at.button if b.label == "Details"]
        if opened >= len(details):
            break
        details[opened].click().run()
        findings += _check(at, allowed)
        opened += 1
    assert opened >= 2, "the Library did not offer to open the two files"
    assert not findings, findings


def test_gpu_monitor_in_plain_words(tiny_env: Path, tiny_model_dir: Path) -> None:
    at = open_page("gpu_monitor")
    assert not _check(at, _allowed(tiny_env, tiny_model_dir))


# ------------------------------------------------------------------ the wording mechanism (defect 10)
def test_core_messages_in_web_words() -> None:
    from core.errors import UserError, for_web
    from core.ocr.types import OcrError

    assert for_web("no text found on this page (blank, too blurred or a script no installed engine reads; try "
                   "--enhanced or another --lang)") == ("no text found on this page (blank, too blurred or a script "
                                                        "no installed engine reads; try Enhanced or another Language)")
    assert for_web("RapidOCR's bundled models do not read 'ar'; use --engine tesseract (or auto)") == \
        "RapidOCR's bundled models do not read 'ar'; choose tesseract as the Engine (or auto)"
    assert for_web("3 of 90 pages are selected, above the limit of 50; choose a page range (e.g. --pages 1-50)") \
        == "3 of 90 pages are selected, above the limit of 50; choose a page range (e.g. 1-50 in Pages to read)"
    assert for_web("it is not in the local Hugging Face cache (LocalEntryNotFoundError) and could not be fetched "
                   "(ConnectionError)") == "it is not in the local Hugging Face cache and could not be fetched"
    assert for_web("Download it: `hf download Qwen/X` (or `huggingface-cli download Qwen/X`), then copy") == \
        "Download it: `hf download Qwen/X`, then copy"
    # an error keeps its CLI wording for the terminal, and has a web one for pages
    err = OcrError("The Qwen3-VL engine failed: out of memory.", "Use --engine rapidocr or tesseract.")
    assert str(err).endswith("Use --engine rapidocr or tesseract.")
    assert err.for_web() == "The Qwen3-VL engine failed: out of memory. Choose rapidocr or tesseract as the Engine."
    own = UserError("Cause.", "Run `vlscope video ingest FILE`.", web_fix="Press Ingest on the Video Q&A page.")
    assert for_web(own) == "Cause. Press Ingest on the Video Q&A page."


def test_one_download_command_and_no_class_names_in_the_model_status(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import Settings
    from core.status import model_status

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    status = model_status(Settings(model="Qwen/Qwen3-VL-8B-Instruct", offline=False))
    assert not status.available
    assert status.message.count("hf download") == 1 and "`hf download Qwen/Qwen3-VL-8B-Instruct`" in status.message
    assert "huggingface-cli" not in status.message and not CLASS_NAME.search(status.message)
    folder = model_status(Settings(model=str(tmp_path / "weights")))
    assert "hf download" not in folder.message and "Point VLSCOPE_MODEL" in folder.message


def test_the_pages_say_the_same_download_command_as_home(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model box of the pages named `huggingface-cli download Qwen/Qwen3-VL-4B-Instruct` (whatever model was
    set); Home named `hf download`: one command, for the configured model."""
    monkeypatch.setenv("VLSCOPE_MODEL", "Qwen/Qwen3-VL-2B-Instruct")
    at = open_page("ocr")
    _upload(at, "ocr_upload", "note.png", text_image(["Meeting notes"]), "image/png")
    texts = shown_texts(at)
    box = next(t for t in texts if "need the model" in t)
    assert "hf download Qwen/Qwen3\\-VL\\-2B\\-Instruct" in box.replace("\\`", "`") or \
        "hf download Qwen/Qwen3-VL-2B-Instruct" in box
    assert not any("huggingface-cli" in t or "4B" in t for t in texts)


def test_the_page_icon_is_served_by_the_dashboard_not_a_font_cdn() -> None:
    """`:material/...` page icons make the browser fetch the favicon from fonts.gstatic.com (fails offline);
    an emoji is drawn by the browser itself."""
    source = (ROOT / "Home.py").read_text(encoding="utf-8")
    icon = re.search(r"set_page_config\([^)]*page_icon=([^,)]+)", source)
    assert icon is not None
    value = icon.group(1).strip()
    assert ":material/" not in value and "http" not in value, value


def test_an_unexpected_error_shows_no_class_name_in_the_browser() -> None:
    """Streamlit's "type" error details put the exception's class name ("TypeError") on the page."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["showErrorDetails"] == "none"


def test_setup_says_when_it_installs_the_cuda_build_without_an_nvidia_driver(tmp_path: Path) -> None:
    """Defect 10: a 6.9 GB CUDA build of torch was installed on a machine with no NVIDIA driver without a word.
    The setup's torch step is run in dry-run mode (VLSCOPE_SETUP_DRY_RUN=1) with no nvidia-smi on the path."""
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VLSCOPE_SETUP_DRY_RUN": "1"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said
    assert "No NVIDIA driver found" in said
    assert "VLSCOPE_TORCH_BUILD=cpu" in said
    assert "would install torch" in said
    cpu = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=tmp_path,
                         env={**env, "VLSCOPE_TORCH_BUILD": "cpu"}, capture_output=True, text=True, timeout=60)
    assert cpu.returncode == 0, cpu.stderr
    assert "https://download.pytorch.org/whl/cpu" in cpu.stdout + cpu.stderr


# ------------------------------------------------------------------ the memory plan (defect 6)
def test_the_plan_command_checks_the_ram_on_a_machine_without_a_gpu(tmp_path: Path) -> None:
    """`vlscope video plan` said 26 GiB on a 23.5 GiB machine with only "memory fit not checked"."""
    from core.gpu import nvml_available

    if nvml_available():
        pytest.skip("this machine has a GPU: the RAM check is for machines without one")
    import psutil

    video = make_video(tmp_path / "v.mp4")
    out = subprocess.run([str(Path(sys.executable).parent / "vlscope"), "video", "plan", str(video)],
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert "memory fit not checked" not in out.stdout
    fits = next(line for line in out.stdout.splitlines() if line.startswith("fits:"))
    available = psutil.virtual_memory().available / 1024**3
    shown_gib = float(re.search(r"in ([0-9.]+) GiB", fits).group(1))
    assert abs(shown_gib - available) < 2.0, (fits, available)


def test_the_plan_uses_the_configured_models_own_shape(tiny_model_dir: Path) -> None:
    """The planner assumed the 4B shape for any model whose name does not say its size; the configured model's
    config.json says its shape."""
    import torch
    from transformers import AutoModelForImageTextToText

    from core.media.budget import MODEL_PARAMS, kv_bytes_per_token, size_from_model, weights_bytes

    size = size_from_model(str(tiny_model_dir))
    assert size is not None and size != "4b"
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    real = sum(p.numel() for p in model.parameters()) * 4
    assert abs(weights_bytes(size, "fp32") - real) / real < 0.01
    text = model.config.text_config
    assert kv_bytes_per_token(size, "fp32") == 2 * text.num_hidden_layers * text.num_key_value_heads * \
        text.head_dim * 4
    assert MODEL_PARAMS[size]["layers"] == text.num_hidden_layers
    # the released shapes are still named by their size
    from core.media.budget import size_from_config
    from core.vlm.shapes import qwen3_vl_config_dict

    assert [size_from_config(qwen3_vl_config_dict(s)) for s in ("2b", "4b", "8b")] == ["2b", "4b", "8b"]


def test_the_video_page_estimates_for_the_configured_model(tiny_env: Path, tmp_path: Path) -> None:
    at = open_page("video")
    _upload(at, "video_upload", "cuts.mp4", make_video(tmp_path / "v.mp4").read_bytes(), "video/mp4")
    caption = next(c.value for c in at.caption if c.value.startswith("Estimated for"))
    assert "4B assumed" not in caption and "Qwen3-VL-4B" not in caption, caption
