"""Library search at team scale: the full-text index against the old scan of every stored result (not a test:
prints figures).

    python benchmarks/library_search.py [--items 10000] [--baseline-items 300 1000] [--reps 25] [--work DIR]

1. Fills a real disk result cache (core.cache.ResultCache) with `--items` synthetic library files, as the
   pages store them: a `library.file` record and a thumbnail each; videos with on-screen text spans,
   caption chunks, chapters and answers, images with one OCR page, PDFs with 1 to 8 OCR pages. Text
   lengths follow what the stages store (an OCR page 1,500-3,500 characters, a caption 60-200, a chapter
   summary 100-300, an answer 200-800); 9 languages in 6 scripts (Latin with accents, Cyrillic, Arabic,
   Chinese, Japanese, Korean). A few needles (a rare name, a Chinese and a Japanese phrase) sit at known
   files, times and pages: every query's hits are checked against them.
2. Builds the index from the cache (`LibraryIndex.rebuild`, timed), then times each query `--reps` times
   as the Library page runs it (the sync check included): p50 and p95 in milliseconds; filters too.
3. Stores one new result and times the sync that indexes it and the search that finds it.
4. The baseline, in the same process and on the same 10,000 files: `core.library.search_items`, the search
   the Library ran before the index (it reads every stored result of every file on each query), against the
   index, and the ratio. Then the search as committed before this change (BASELINE_COMMIT, loaded from git),
   which also listed every entry of the cache for each file (it grows with files x entries), on caches of the
   first `--baseline-items` files of the same corpus: it does not finish in useful time at 10,000.
5. Tokenizers for CJK queries: hits and latency of FTS5 unicode61 as is, trigram, and unicode61 with CJK
   characters set apart (what the index uses) on the same text.

Raw output: benchmarks/results/2026-12-02-library-search.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.cache import ResultCache, make_key  # noqa: E402
from core.library import search_items  # noqa: E402
from core.library.index import LibraryIndex, fts_text  # noqa: E402

WORDS = {
    "en": ("the of and to in is for on with as by at from report invoice revenue quarterly meeting slide agenda "
           "customer order delivery payment total amount due date account balance budget forecast growth sales "
           "market product release team project schedule review design engineering support service contract "
           "price discount tax shipping warehouse inventory supplier vendor purchase receipt statement summary "
           "chart figure table results analysis speaker presentation welcome thank question answer demo video "
           "camera screen window kitchen street car bicycle dog park river bridge building office desk laptop "
           "phone coffee lunch morning evening weather rain sunny cloudy train station ticket platform airport "
           "flight gate boarding passenger luggage hotel room reservation guest breakfast menu dinner recipe "
           "ingredient oven minutes temperature training exercise lesson chapter lecture student teacher "
           "homework exam score goal match player referee stadium crowd music guitar concert stage light").split(),
    "de": ("der die das und ist nicht mit für auf Rechnung Betrag Lieferung Bestellung Zahlung fällig Kunde "
           "Straße München Größe Übersicht Prüfung Änderung Büro Besprechung Ergebnis Umsatz Quartal Bericht "
           "Vertrag Preis Steuer Versand Lager Lieferant Beleg Zusammenfassung Folie Vortrag Frage Antwort "
           "Zug Bahnhof Fahrkarte Wetter Regen Küche Rezept Minuten Schüler Lehrer Übung Mannschaft").split(),
    "fr": ("le la les et est pas avec pour sur facture montant livraison commande paiement échéance client "
           "société café réunion résultat chiffre trimestre rapport contrat prix taxe expédition entrepôt "
           "fournisseur reçu résumé diapositive présentation question réponse gare billet météo pluie cuisine "
           "recette élève professeur leçon équipe match stade musique lumière été hôtel réservation").split(),
    "es": ("el la los y es no con para en factura importe entrega pedido pago vencimiento cliente empresa "
           "reunión resultado ventas trimestre informe contrato precio impuesto envío almacén proveedor recibo "
           "resumen diapositiva presentación pregunta respuesta estación billete lluvia cocina receta niño "
           "profesor lección equipo partido estadio música canción mañana año señor").split(),
    "ru": ("и в не на с что по это счёт сумма доставка заказ оплата клиент компания встреча результат продажи "
           "квартал отчёт договор цена налог склад поставщик чек итог слайд доклад вопрос ответ вокзал билет "
           "погода дождь кухня рецепт ученик учитель урок команда матч музыка свет гостиница").split(),
    "ar": ("في من على إلى مع هذا فاتورة مبلغ تسليم طلب دفع عميل شركة اجتماع نتيجة مبيعات ربع تقرير عقد سعر "
           "ضريبة شحن مستودع مورد إيصال ملخص عرض سؤال جواب محطة تذكرة طقس مطر مطبخ وصفة طالب معلم درس فريق "
           "مباراة موسيقى ضوء فندق").split(),
    "zh": ("我们 今天 会议 发票 金额 付款 客户 公司 订单 交货 日期 总计 季度 销售 报告 合同 价格 税费 运输 仓库 "
           "供应商 收据 摘要 幻灯片 演讲 问题 回答 视频 屏幕 厨房 街道 汽车 自行车 公园 河流 大楼 办公室 电脑 手机 "
           "咖啡 午餐 早上 晚上 天气 下雨 火车站 车票 机场 航班 酒店 房间 预订 早餐 菜单 晚餐 食谱 学生 老师 作业 "
           "考试 比赛 球员 音乐 吉他 音乐会 舞台 灯光 第三 市场 产品 发布 团队 项目 计划 设计 工程 服务").split(),
    "ja": ("今日 会議 資料 請求書 金額 支払い 顧客 会社 注文 納品 日付 合計 四半期 売上 報告書 契約 価格 税金 配送 "
           "倉庫 仕入先 領収書 概要 スライド 発表 質問 回答 動画 画面 台所 通り 自動車 自転車 公園 川 建物 事務所 "
           "パソコン 携帯 コーヒー 昼食 朝 夜 天気 雨 駅 切符 空港 便 ホテル 部屋 予約 朝食 メニュー 夕食 レシピ "
           "学生 先生 宿題 試験 試合 選手 音楽 ギター コンサート 舞台 照明 です ます の は が を に で と").split(),
    "ko": ("오늘 회의 자료 청구서 금액 결제 고객 회사 주문 배송 날짜 합계 분기 매출 보고서 계약 가격 세금 창고 "
           "공급업체 영수증 요약 슬라이드 발표 질문 답변 동영상 화면 부엌 거리 자동차 자전거 공원 강 건물 사무실 "
           "컴퓨터 휴대폰 커피 점심 아침 저녁 날씨 비 기차역 표 공항 호텔 방 예약 학생 선생님 시험 경기 음악").split(),
}
LANG_SHARE = [("en", 55), ("de", 5), ("fr", 4), ("es", 4), ("ru", 4), ("ar", 4), ("zh", 12), ("ja", 8), ("ko", 4)]
SPACED = {"zh": "", "ja": ""}  # written without spaces between words

# needles at known places (checked against every run's hits): item number, what, where
NEEDLES = {
    "okonkwo": (4242, "video.answers", "Ms Okonkwo presented the harbour expansion plan"),
    "增值税专用发票": (777, "ocr-page", "增值税专用发票 开票日期 2026年11月"),
    "見積書": (9001, "video.text", "見積書 株式会社サンプル"),
}


def _words(rng: random.Random, lang: str, chars: int) -> str:
    vocab = WORDS[lang]
    sep = SPACED.get(lang, " ")
    out, n = [], 0
    while n < chars:
        w = rng.choice(vocab)
        out.append(w)
        n += len(w) + len(sep)
    return sep.join(out)[:chars]


def _lang(rng: random.Random) -> str:
    return rng.choices([lang for lang, _ in LANG_SHARE], weights=[w for _, w in LANG_SHARE])[0]


def fill(cache: ResultCache, count: int, seed: int = 7, start: int = 0) -> dict[str, Any]:
    """Store `count` synthetic library files (numbers start..start+count-1) in `cache`; returns what was stored."""
    stats = {"files": 0, "entries": 0, "chars": 0, "video": 0, "image": 0, "pdf": 0}
    base = 1_790_000_000.0  # 2026-09
    for n in range(start, start + count):
        rng = random.Random(seed * 1_000_003 + n)
        sha = f"{n:08d}" + "%056x" % rng.getrandbits(224)
        kind = rng.choices(["video", "image", "pdf"], weights=[50, 35, 15])[0]
        kind = {NEEDLES[k][0]: v for k, v in (("okonkwo", "video"), ("增值税专用发票", "pdf"), ("見積書", "video"))}.get(n, kind)
        lang = _lang(rng)
        ext = {"video": "mp4", "image": "png", "pdf": "pdf"}[kind]
        record = {"name": f"clip-{n:05d}.{ext}" if kind == "video" else f"scan-{n:05d}.{ext}", "kind": kind,
                  "path": f"/srv/media/{n:05d}.{ext}", "size_bytes": rng.randint(10**5, 10**9), "origin": "upload",
                  "added_at": base + n * 600.0, "readable": True}
        puts: list[tuple[Any, Any]] = [(make_key(sha, "library.file", {}), record)]
        thumb = bytes(rng.getrandbits(8) for _ in range(64)) * 120  # about the size of a 240-pixel JPEG
        if kind == "video":
            duration = rng.uniform(60, 3600)
            spans = []
            for _ in range(rng.randint(10, 40)):
                t = rng.uniform(0, duration)
                spans.append({"start": t, "end": t + rng.uniform(1, 8), "text": _words(rng, lang, rng.randint(5, 60)),
                              "score": 0.9, "samples": 3, "box": None})
            puts.append((make_key(sha, "video.text", {"n": 1}), {"readings": [], "spans": spans, "ocr_calls": 40}))
            for c in range(rng.randint(1, 4)):
                lo = c * 120.0
                events = [{"kind": "caption", "start": lo + i * 10.0, "end": lo + i * 10.0 + 8.0,
                           "label": _words(rng, lang, rng.randint(60, 200))} for i in range(rng.randint(5, 12))]
                puts.append((make_key(sha, "captions", {"start": lo}), {"start": lo, "end": lo + 120.0,
                                                                         "events": events, "problems": []}))
            chapters = [{"start": i * duration / 6, "end": (i + 1) * duration / 6,
                         "title": _words(rng, lang, rng.randint(20, 50)), "summary": _words(rng, lang, rng.randint(100, 300))}
                        for i in range(rng.randint(3, 8))]
            puts.append((make_key(sha, "chapters", {}), {"chapters": chapters,
                                                         "summary": _words(rng, lang, rng.randint(300, 600))}))
            for a in range(rng.randint(0, 3)):
                t = rng.uniform(0, duration)
                puts.append((make_key(sha, "video.answers", {"q": a}), {
                    "question": _words(rng, lang, rng.randint(20, 80)), "text": _words(rng, lang, rng.randint(200, 800)),
                    "events": [{"kind": "answer", "start": t, "end": t + 2.0, "label": _words(rng, lang, 40)}]}))
        else:
            pages = 1 if kind == "image" else rng.randint(1, 8)
            for p in range(pages):
                text = _words(rng, lang, rng.randint(1500, 3500))
                lines = [{"text": text[i:i + 70], "confidence": 0.95} for i in range(0, len(text), 70)]
                puts.append((make_key(sha, "ocr-page", {"page": p}), {"index": p, "width": 2480, "height": 3508,
                                                                      "lines": lines}))
        for needle, (at, stage, text) in NEEDLES.items():
            if n == at:
                if stage == "video.answers":
                    puts.append((make_key(sha, stage, {"q": "needle"}), {"question": "Who presented?", "text": text,
                                 "events": [{"kind": "answer", "start": 754.0, "end": 760.0, "label": text}]}))
                elif stage == "ocr-page":
                    puts.append((make_key(sha, stage, {"page": 41}), {"index": 1, "width": 1, "height": 1,
                                                                      "lines": [{"text": text}]}))
                else:
                    puts.append((make_key(sha, stage, {"needle": 1}), {"readings": [], "ocr_calls": 1, "spans": [
                        {"start": 95.5, "end": 99.0, "text": text, "score": 0.9, "samples": 2}]}))
        for key, value in puts:
            cache.put_json(key, value)
            stats["chars"] += sum(len(s) for s in _strings(value))
        cache.put_bytes(make_key(sha, "library.thumb", {}), thumb)
        stats["files"] += 1
        stats["entries"] += len(puts) + 1
        stats[kind] += 1
    return stats


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


BASELINE_COMMIT = "af9f467"  # core/library/catalog.py before issue 16: each file's results listed by reading every entry


def committed_search() -> Any:
    """search_items of core/library/catalog.py at BASELINE_COMMIT (from git), or None without git."""
    import subprocess
    import types

    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:core/library/catalog.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("baseline_catalog")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"{BASELINE_COMMIT}:core/library/catalog.py", "exec"), mod.__dict__)  # noqa: S102 - our code
    return mod.search_items


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


QUERIES = [
    ("invoice", {}),
    ("quarterly revenue", {}),
    ("deliv", {}),
    ("Rechnung fällig", {}),
    ("facture", {}),
    ("发票", {}),
    ("增值税专用发票", {}),
    ("会議資料", {}),
    ("見積書", {}),
    ("회의", {}),
    ("счёт", {}),
    ("فاتورة", {}),
    ("okonkwo", {}),
    ("clip-04242", {}),
    ("invoice", {"kinds": ["pdf"]}),
    ("meeting", {"stages": ["captions"]}),
    ("payment", {"since": 1_790_000_000.0 + 9000 * 600.0}),
]


def check_needles(index: LibraryIndex) -> list[str]:
    out = []
    for needle, (at, stage, _text) in NEEDLES.items():
        hits = index.search(needle).hits
        best = next((h for h in hits if h.input_hash.startswith(f"{at:08d}")), None)
        where = "none" if best is None else (f"{best.name} {best.stage_label} t={best.start} page={best.page} "
                                             f"snippet={best.snippet.text[:60]!r}")
        out.append(f"  {needle!r}: {len(hits)} hit(s), expected file {at} in {stage}: {where}")
    return out


def time_queries(index: LibraryIndex, reps: int) -> list[str]:
    lines = [f"{'query':<28}{'filters':<34}{'hits':>7}{'files':>7}{'p50 ms':>9}{'p95 ms':>9}"]
    for query, filters in QUERIES:
        times = []
        result = None
        for _ in range(reps):
            t0 = time.perf_counter()
            result = index.search(query, **filters)
            times.append((time.perf_counter() - t0) * 1000)
        shown = ", ".join(f"{k}={v}" for k, v in filters.items())
        plus = "+" if result.more else ""
        lines.append(f"{query:<28}{shown[:33]:<34}{str(result.total) + plus:>7}{str(result.files) + plus:>7}"
                     f"{_pct(times, .5):>9.1f}{_pct(times, .95):>9.1f}")
    t0 = time.perf_counter()
    items, total = index.items(limit=25)
    lines.append(f"{'(list newest 25 of all)':<28}{'':<34}{total:>7}{'':>7}{(time.perf_counter() - t0) * 1000:>9.1f}")
    return lines


def tokenizers(texts: list[str], reps: int) -> list[str]:
    """Hits and latency of three tokenizers on the same CJK-rich texts."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE plain USING fts5(body, tokenize='unicode61')")
    con.execute("CREATE VIRTUAL TABLE tri USING fts5(body, tokenize='trigram')")
    con.execute("CREATE VIRTUAL TABLE split USING fts5(body, tokenize='unicode61 remove_diacritics 2')")
    for t in texts:
        con.execute("INSERT INTO plain VALUES (?)", (t,))
        con.execute("INSERT INTO tri VALUES (?)", (t,))
        con.execute("INSERT INTO split VALUES (?)", (fts_text(t),))
    truth = {}
    lines = [f"{len(texts)} texts; 'substring' is how many contain the query (Python `in`)",
             f"{'query':<16}{'substring':>10}{'unicode61':>11}{'trigram':>9}{'trigram LIKE':>14}{'split (ours)':>14}"
             f"{'ms ours':>9}{'ms trigram':>12}"]
    for q in ("发票", "会议", "川", "会議資料", "請求書", "見積書", "회의", "청구서", "第三季度"):
        truth[q] = sum(q in t for t in texts)
        phrase = '"' + q + '"'
        ours = '"' + " ".join(fts_text(q).split()) + '"'
        counts = []
        for table, expr in (("plain", phrase), ("tri", phrase), ("split", ours)):
            try:
                counts.append(con.execute(f"SELECT count(*) FROM {table} WHERE {table} MATCH ?", (expr,)).fetchone()[0])
            except sqlite3.OperationalError as exc:
                counts.append(f"error: {exc}")
        like = con.execute("SELECT count(*) FROM tri WHERE body LIKE ?", (f"%{q}%",)).fetchone()[0]
        t_ours, t_tri = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            con.execute("SELECT rowid FROM split WHERE split MATCH ?", (ours,)).fetchall()
            t_ours.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            con.execute("SELECT rowid FROM tri WHERE body LIKE ?", (f"%{q}%",)).fetchall()
            t_tri.append((time.perf_counter() - t0) * 1000)
        lines.append(f"{q:<16}{truth[q]:>10}{counts[0]!s:>11}{counts[1]!s:>9}{like:>14}{counts[2]!s:>14}"
                     f"{statistics.median(t_ours):>9.2f}{statistics.median(t_tri):>12.2f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--baseline-items", type=int, nargs="*", default=[300, 1000])
    parser.add_argument("--baseline-queries", nargs="*", default=["invoice", "okonkwo", "发票"])
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--baseline-reps", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for the caches (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="library-bench-"))
    print("# Library search: full-text index (SQLite FTS5) vs the old scan of every stored result")
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}, "
          f"{os.cpu_count()} CPU cores (shared), {platform.platform()}")
    try:
        cache_dir = work / "cache"
        cache = ResultCache(cache_dir, 200 * 1024**3)
        t0 = time.perf_counter()
        stats = fill(cache, args.items)
        fill_s = time.perf_counter() - t0
        print(f"\n## Corpus: {stats['files']} files ({stats['video']} videos, {stats['image']} images, {stats['pdf']} PDFs), "
              f"{stats['entries']} cache entries, {stats['chars'] / 1e6:.1f} M characters of text; stored in {fill_s:.0f} s")
        index = LibraryIndex(cache, cache_dir)
        t0 = time.perf_counter()
        report = index.rebuild()
        build_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in cache_dir.glob("library-index.sqlite3*"))
        print(f"\n## Index build (rebuild from the cache): {build_s:.1f} s for {report.indexed} entries "
              f"({report.indexed / build_s:.0f} entries/s); {index.counts()['passage']} passages; "
              f"index file {size / 1024**2:.0f} MiB")
        t0 = time.perf_counter()
        index.sync()
        print(f"sync with nothing new: {(time.perf_counter() - t0) * 1000:.2f} ms")
        print("\n## Needles (the right file, time or page, snippet)")
        print("\n".join(check_needles(index)))
        print(f"\n## Queries over {stats['files']} files, {args.reps} runs each (search() with its sync check, "
              "as the page calls it; 50 hits, 5 per file)")
        print("\n".join(time_queries(index, args.reps)))

        sha = "ff" * 32
        t0 = time.perf_counter()
        cache.put_json(make_key(sha, "library.file", {}), {"name": "late.mp4", "kind": "video", "path": "/srv/late.mp4",
                                                             "size_bytes": 1, "added_at": time.time(), "readable": True})
        cache.put_json(make_key(sha, "video.text", {}), {"readings": [], "ocr_calls": 1, "spans": [
            {"start": 3.0, "end": 4.0, "text": "Xylophonist on stage", "score": 1.0, "samples": 1}]})
        stored_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        sync = index.sync()
        sync_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        found = index.search("xylophonist").hits
        print(f"\n## A new result stored (2 entries, {stored_ms:.1f} ms to store): sync {sync_ms:.1f} ms "
              f"({sync.indexed} indexed), then search {(time.perf_counter() - t0) * 1000:.1f} ms finds "
              f"{[(h.name, h.start) for h in found]}")
        t0 = time.perf_counter()
        cache.delete_input(sha)
        gone = index.search("xylophonist").total
        print(f"deleted by another process (the cache only): the next search ({(time.perf_counter() - t0) * 1000:.1f} ms, "
              f"finding the removal by its per-file counts) finds {gone}")
        for key, value in ((make_key(sha, "library.file", {}), {"name": "late.mp4", "kind": "video", "path": "",
                                                                "size_bytes": 1, "added_at": time.time()}),
                           (make_key(sha, "video.text", {}), {"readings": [], "ocr_calls": 1, "spans": [
                               {"start": 3.0, "end": 4.0, "text": "Xylophonist", "score": 1.0, "samples": 1}]})):
            cache.put_json(key, value)
        index.sync()
        t0 = time.perf_counter()
        cache.delete_input(sha)
        index.forget_input(sha)
        gone = index.search("xylophonist").total
        print(f"deleted on the Library page (delete_item, then forget_input): delete and the next search "
              f"{(time.perf_counter() - t0) * 1000:.1f} ms, finds {gone}")

        print(f"\n## Baseline at {stats['files']} files, same cache, same process: core.library.search_items, which "
              "reads every stored result of every file on each query (the Library's search before the index)")
        print(f"{'query':<12}{'scan s':>9}{'scan hits':>11}{'index ms':>10}{'index files':>13}{'ratio':>9}")
        for query in args.baseline_queries:
            old = []
            for _ in range(args.baseline_reps):
                t0 = time.perf_counter()
                old_hits = search_items(cache, query)
                old.append(time.perf_counter() - t0)
            new = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                res = index.search(query)
                new.append((time.perf_counter() - t0) * 1000)
            o, i = statistics.median(old), statistics.median(new)
            print(f"{query:<12}{o:>9.2f}{len(old_hits):>11}{i:>10.1f}{str(res.files) + ('+' if res.more else ''):>13}"
                  f"{o * 1000 / i:>8.0f}x")
        cache.close()
        index.close()

        committed = committed_search()
        if committed is not None and args.baseline_items:
            print(f"\n## The search as committed at {BASELINE_COMMIT} (each file's results found by listing every "
                  "entry of the cache: grows with files x entries), on the first N files of the same corpus")
            print(f"{'files':>6}{'entries':>9}{'query':>10}{'old s':>9}{'old hits':>10}{'index ms':>10}{'ratio':>10}")
            for n in args.baseline_items:
                bdir = work / f"baseline-{n}"
                bcache = ResultCache(bdir, 200 * 1024**3)
                bstats = fill(bcache, n)
                bindex = LibraryIndex(bcache, bdir)
                bindex.rebuild()
                for query in ("invoice", "发票"):
                    t0 = time.perf_counter()
                    old_hits = committed(bcache, query)
                    o = time.perf_counter() - t0
                    new = []
                    for _ in range(args.reps):
                        t0 = time.perf_counter()
                        bindex.search(query)
                        new.append((time.perf_counter() - t0) * 1000)
                    i = statistics.median(new)
                    print(f"{n:>6}{bstats['entries']:>9}{query:>10}{o:>9.2f}{len(old_hits):>10}{i:>10.1f}"
                          f"{o * 1000 / i:>9.0f}x")
                bcache.close()
                bindex.close()

        print("\n## Tokenizers for Chinese, Japanese and Korean queries (same texts: the CJK files of the corpus)")
        texts = []
        for n in range(2000):
            rng = random.Random(n)
            lang = rng.choice(["zh", "ja", "ko"])
            texts.append(_words(rng, lang, rng.randint(200, 2000)))
        texts[5] += " 增值税专用发票 第三季度报告"
        print("\n".join(tokenizers(texts, args.reps)))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
