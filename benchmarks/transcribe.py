"""Transcription speed as a multiple of real time (seconds of sound heard per second of work).

    python benchmarks/transcribe.py                      # this CPU: PocketSphinx on 1 minute, a small Whisper
    python benchmarks/transcribe.py --whisper-shape large-v3-turbo --minutes 60 --skip-sphinx   # on a GPU

The sound: a 60-second block of real speech (sentences spoken by espeak-ng with short pauses and one 5-second
silence; made here, or read from --block WAV), repeated to the length asked for. Through the product's pipeline
(voice detector, chunks of at most 30 s, merge), with no result cache (every chunk is heard).

(1) PocketSphinx on the CPU, with the voice detector skipping silence against the same sound heard in plain
    30-second windows (nothing skipped); word error rate of both.
(2) Whisper with random weights of a real shape (large-v3-turbo: d_model 1280, 32 encoder and 4 decoder layers,
    20 heads, 128 mel bins, 51866 tokens, as its published config.json), on the GPU when there is one. Random weights
    decode noise and would stop at once or run to the 448-token limit, so each chunk decodes exactly the number of
    tokens real speech of its length takes (the block's words x 1.3 tokens a word + 2 timestamp tokens a sentence,
    per second of speech): the decode work is realistic, the text is not. Batched chunks (the product's default)
    against one chunk at a time; with word times (cross-attention alignment, eager attention) and without.

Not a test: it prints figures and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "Good morning everyone and welcome to the quarterly review.",
    "We will start with the budget and then look at hiring.",
    "Sales grew by twelve percent in the last three months.",
    "Most of that growth came from the new office in the north.",
    "Costs went up as well because of the move.",
    "The team expects the numbers to settle by the end of the year.",
    "Please send your questions to the planning group before Friday.",
    "Next we will talk about the schedule for the new product.",
    "The first version should be ready in the spring.",
    "Testing will take about six weeks after that.",
    "Thank you all for listening and see you next week.",
]
PAUSES = [0.8, 1.2, 0.6, 1.5, 0.9, 5.0, 0.7, 1.1, 0.8, 1.3, 0.9]
BLOCK_S = 60.0
TOKENS_PER_WORD = 1.3  # English words per Whisper BPE token, typical
TURBO_ALIGNMENT_HEADS = [[2, 4], [2, 11], [3, 3], [3, 6], [3, 11], [3, 14]]  # assumed (the real list is in its
# generation_config.json, not read here): six heads of the last two decoder layers; only the DTW input depends on it


def log(line: str = "") -> None:
    print(line, flush=True)


# ------------------------------------------------------------------------------------------ the sound
def make_block(folder: Path) -> tuple[Path, dict]:
    """A 60-s WAV of SENTENCES (espeak-ng, 22.05 kHz) with PAUSES after each, and what was said."""
    wav, meta = folder / "block.wav", folder / "block.json"
    if wav.is_file() and meta.is_file():
        return wav, json.loads(meta.read_text())
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng, or give --block WAV")
    sr = 22050
    track = np.zeros(int(BLOCK_S * sr), dtype=np.int16)
    t, said = 0.5, []
    for text, pause in zip(SENTENCES, PAUSES):
        out = subprocess.run([exe, "-v", "en-us+f5", "-s", "150", "--stdout", text], capture_output=True,
                             check=True).stdout
        import io

        with wave.open(io.BytesIO(out)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 300)
        x = x[loud[0]:loud[-1] + 1]
        at = int(t * sr)
        if at + len(x) > len(track):
            break
        track[at:at + len(x)] = x
        said.append({"start": round(t, 3), "end": round(t + len(x) / sr, 3), "text": text})
        t += len(x) / sr + pause
    folder.mkdir(parents=True, exist_ok=True)
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(track.tobytes())
    info = {"said": said, "speech_s": round(sum(s["end"] - s["start"] for s in said), 3)}
    meta.write_text(json.dumps(info, indent=1))
    return wav, info


def load_16k(wav: Path) -> np.ndarray:
    """The block at 16 kHz mono float32: PyAV's resampler when PyAV is installed, else linear interpolation."""
    try:
        from core.speech.audio import decode_audio

        return decode_audio(wav).samples
    except ImportError:
        with wave.open(str(wav)) as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
        n = int(len(x) * 16000 / sr)
        return np.interp(np.arange(n) * sr / 16000, np.arange(len(x)), x).astype(np.float32)


def track(block: np.ndarray, minutes: float):
    from core.speech.audio import AudioTrack

    repeats = max(1, int(np.ceil(minutes * 60 / (len(block) / 16000))))
    samples = np.tile(block, repeats)[: int(minutes * 60 * 16000)]
    return AudioTrack(samples=samples, sample_rate=16000, source="audio file", codec="pcm", path="bench")


def reference(info: dict, audio) -> str:
    """What was said in `audio` (whole blocks and the sentences of a last partial block that fit)."""
    block_n = int(BLOCK_S * 16000)
    full, rest = divmod(len(audio.samples), block_n)
    words = [s["text"] for s in info["said"]] * full
    words += [s["text"] for s in info["said"] if s["end"] * 16000 <= rest]
    return " ".join(words)


def run(engine, audio, options=None, label: str = "") -> tuple[float, object]:
    from core.speech.pipeline import SpeechOptions, transcribe_file

    t = time.perf_counter()
    transcript = transcribe_file("bench", engine, None, input_hash="0" * 64, options=options or SpeechOptions(),
                                 audio=audio)
    return time.perf_counter() - t, transcript


# ------------------------------------------------------------------------------------------ PocketSphinx
def bench_sphinx(block: np.ndarray, info: dict, minutes: float) -> None:
    from core.speech.chunks import ChunkOptions
    from core.speech.pipeline import SpeechOptions
    from core.speech.sphinx import PocketSphinxEngine, version
    from core.speech.vad import VadOptions
    from core.speech.wer import word_errors

    audio = track(block, minutes)
    ref = reference(info, audio)
    engine = PocketSphinxEngine()
    engine.load()
    log(f"== (1) PocketSphinx {version()} on the CPU, {audio.duration_s / 60:.1f} min of sound "
        f"({info['speech_s'] / BLOCK_S:.0%} speech)")
    skip, t_vad = run(engine, audio)
    chunks_vad = engine.chunks_transcribed
    log(f"voice detector on: {skip:7.1f} s, {audio.duration_s / skip:6.2f}x real time, {chunks_vad} chunks, "
        f"{t_vad.speech_s:.0f} s of speech heard; {word_errors(ref, t_vad.text()).describe()}")
    everything = SpeechOptions(vad=VadOptions(floor_db=-200.0, above_floor_db=-1000.0, below_peak_db=1000.0),
                               chunks=ChunkOptions(chunk_s=30.0, overlap_s=2.0, max_gap_s=2.0))
    plain, t_all = run(engine, audio, everything)
    log(f"everything heard:  {plain:7.1f} s, {audio.duration_s / plain:6.2f}x real time, "
        f"{engine.chunks_transcribed - chunks_vad} chunks (30-s windows); {word_errors(ref, t_all.text()).describe()}")
    log(f"ratio: skipping silence is {plain / skip:.2f}x faster")


# ------------------------------------------------------------------------------------------ Whisper
def bench_whisper(block: np.ndarray, info: dict, minutes: float, shape_name: str, device: str, batch: int | None,
                  baseline_minutes: float) -> None:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    from core.speech import tiny
    from core.speech.chunks import plan_chunks
    from core.speech.pipeline import SpeechOptions
    from core.speech.vad import speech_regions
    from core.speech.whisper import WhisperEngine
    from core.vlm.loading import dtype_name, pick_device, pick_dtype

    device = pick_device(device)
    dtype = pick_dtype("auto", device)
    shapes = {"large-v3-turbo": tiny.LARGE_V3_TURBO, "tiny": tiny.TINY,
              "small": dict(tiny.TINY, d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                            decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536)}
    shape = shapes[shape_name]
    tok = tiny.build_tokenizer(pad_to=50257)  # large-v3's token layout: 51866 tokens
    t0 = time.perf_counter()
    with torch.device(device):
        model = tiny.random_whisper(shape, tok=tok, seed=0)
    model = model.to(dtype)
    if shape_name == "large-v3-turbo":
        model.generation_config.alignment_heads = TURBO_ALIGNMENT_HEADS
    params = sum(p.numel() for p in model.parameters())
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]),
                                 tokenizer=tok)
    log(f"== (2) Whisper, random weights of the {shape_name} shape ({params / 1e6:.0f} M parameters, "
        f"{len(tok)} tokens), {device} {dtype_name(dtype)}; built in {time.perf_counter() - t0:.1f} s")
    if device.startswith("cuda"):
        log(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    import transformers

    log(f"transformers {transformers.__version__}")
    audio = track(block, minutes)
    regions = speech_regions(audio.samples, 16000)
    chunks = plan_chunks(regions)
    words = sum(len(s["text"].split()) for s in info["said"])
    rate = (words * TOKENS_PER_WORD + 2 * len(info["said"])) / info["speech_s"]
    mean_chunk = float(np.mean([c.duration for c in chunks]))
    fixed = int(round(rate * mean_chunk))
    log(f"sound: {audio.duration_s / 60:.1f} min, {sum(b - a for a, b in regions) / 60:.1f} min of speech in "
        f"{len(chunks)} chunks of {mean_chunk:.1f} s on average; decode forced to {fixed} tokens a chunk "
        f"({rate:.2f} tokens per second of speech: random weights would not stop by themselves)")

    def engine(batch_size: int) -> WhisperEngine:
        return WhisperEngine.from_loaded(model, processor, device, name=f"random {shape_name}",
                                         batch_size=batch_size, fixed_new_tokens=fixed)

    big = batch or (16 if device.startswith("cuda") else 4)
    warm = engine(big)
    run(warm, track(block, min(minutes, 1.0)))  # warm-up: kernels, allocator
    results = {}
    for label, bs, words_on, mins in [("batched, word times", big, True, minutes),
                                      ("batched, no word times", big, False, minutes),
                                      ("one chunk at a time, word times", 1, True, baseline_minutes)]:
        part = audio if mins >= minutes else track(block, mins)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        seconds, transcript = run(engine(bs), part, SpeechOptions(word_times=words_on))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        speed = part.duration_s / seconds
        results[label] = speed
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.startswith("cuda") \
            else ""
        log(f"{label:<34} batch {bs:>2}: {part.duration_s / 60:5.1f} min in {seconds:7.1f} s = {speed:7.1f}x real "
            f"time; {transcript.chunks} chunks, {len(transcript.segments)} segments, {len(transcript.words)} words"
            f"{peak}")
    base = results["one chunk at a time, word times"]
    log(f"ratio: batched {results['batched, word times'] / base:.2f}x one chunk at a time; word times cost "
        f"{results['batched, no word times'] / results['batched, word times']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block", type=Path, help="a WAV of speech to repeat (default: made with espeak-ng)")
    ap.add_argument("--folder", type=Path, default=ROOT / "cache" / "bench-speech", help="where the block is kept")
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the Whisper track (60 on a GPU)")
    ap.add_argument("--baseline-minutes", type=float, default=None, help="length for one chunk at a time")
    ap.add_argument("--sphinx-minutes", type=float, default=1.0, help="length of the PocketSphinx track")
    ap.add_argument("--whisper-shape", choices=["large-v3-turbo", "small", "tiny"], default=None,
                    help="default: large-v3-turbo on a GPU, tiny on the CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="chunks per batch (default 16 on a GPU, 4 on the CPU)")
    ap.add_argument("--skip-sphinx", action="store_true")
    ap.add_argument("--skip-whisper", action="store_true")
    args = ap.parse_args()
    if args.block is not None:
        wav = args.block
        meta = args.block.with_suffix(".json")
        info = json.loads(meta.read_text()) if meta.is_file() else {"said": [], "speech_s": BLOCK_S}
    else:
        wav, info = make_block(args.folder)
    block = load_16k(wav)
    log(f"block: {len(block) / 16000:.1f} s, {len(info['said'])} sentences, {info['speech_s']:.1f} s of speech")
    if not args.skip_sphinx:
        bench_sphinx(block, info, args.sphinx_minutes)
    if not args.skip_whisper:
        import torch

        gpu = torch.cuda.is_available() and args.device != "cpu"
        shape = args.whisper_shape or ("large-v3-turbo" if gpu else "tiny")
        bench_whisper(block, info, args.minutes, shape, args.device, args.batch,
                      args.baseline_minutes or min(args.minutes, 5.0 if gpu else 1.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
