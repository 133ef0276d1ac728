"""Invoice and receipt fields with evidence (core.ocr.invoice) on invoices rendered here and read with the
real OCR engine, and the model-filled schema (core.ocr.fields_model): validation and merge with a scripted
engine, the tiny random model's noise ignored with a warning."""

from __future__ import annotations

import json

import pytest

from core.ocr.invoice import extract_fields, parse_amount, parse_date
from core.ocr.pipeline import OcrOptions, run_ocr
from core.ocr.types import InvoiceFields, OcrLine, OcrResult
from tests.ocr.conftest import png_bytes, render_lines


def read(lines: list[str], size: int = 26):
    res = run_ocr(png_bytes(render_lines(lines, size=size, gap=0.7)), OcrOptions(engine="rapidocr", tables=False,
                                                                                  fields="on"))
    assert res.fields is not None, res.text
    return res, res.fields


def line_texts(res: OcrResult, key: str) -> list[str]:
    ev = res.fields.evidence[key]
    return [res.pages[ev.page].lines[i].text for i in ev.lines]


def inside(box: list[float], res: OcrResult) -> bool:
    page = res.pages[0]
    return len(box) == 4 and 0 <= box[0] < box[2] <= page.width and 0 <= box[1] < box[3] <= page.height


FRENCH = ["Boulangerie Dupont SARL", "12 rue de la Paix, 75002 Paris", "", "FACTURE", "Facture No : FA-2024-0193",
          "Date de facture : 14/03/2024", "Client : Hotel du Lac", "", "Pain de campagne   3   12,60 EUR",
          "Croissants   24   28,80 EUR", "Total HT   41,40 EUR", "TVA 5,5 %   2,28 EUR", "Total TTC   43,68 EUR"]


def test_french_invoice_fields_with_their_evidence():
    res, f = read(FRENCH)
    assert f.vendor == "Boulangerie Dupont SARL"
    assert f.address is not None and "75002 Paris" in f.address
    assert f.invoice_number == "FA-2024-0193"
    assert f.date == "2024-03-14"
    assert (f.subtotal, f.tax, f.total) == (41.40, 2.28, 43.68)
    assert f.currency == "EUR"
    assert f.checks["subtotal_plus_tax_equals_total"] is True
    assert any("43,68" in t for t in line_texts(res, "total"))
    assert any("2,28" in t for t in line_texts(res, "tax"))
    assert any("14/03/2024" in t for t in line_texts(res, "date"))
    assert any("FA-2024-0193" in t for t in line_texts(res, "invoice_number"))
    assert any("Dupont" in t for t in line_texts(res, "vendor"))
    for key in ("vendor", "date", "invoice_number", "total", "tax"):
        ev = f.evidence[key]
        assert inside(ev.box, res) and 0.5 <= ev.confidence <= 1.0 and ev.source == "rules", (key, ev)
    assert f.buyer == "Hotel du Lac"
    # the evidence survives the JSON round trip (old JSON without evidence reads too)
    back = InvoiceFields.from_dict(json.loads(json.dumps(res.to_dict()["fields"])))
    assert back.evidence["total"].box == f.evidence["total"].box
    old = {k: v for k, v in res.to_dict()["fields"].items() if k not in ("evidence", "address", "buyer", "warnings")}
    assert InvoiceFields.from_dict(old).total == 43.68


GERMAN = ["Müller Werkzeuge GmbH", "Hauptstraße 5, 80331 München", "", "Rechnung", "Rechnungsnummer: RE-2024-0815",
          "Rechnungsdatum: 5. März 2024", "", "Rechnungsempfänger:", "Schmidt Bau AG", "Gartenweg 2, 10115 Berlin", "",
          "Bohrmaschine   1   89,00 €", "Schrauben   10   11,00 €", "Nettobetrag   100,00 €", "MwSt. 19 %   19,00 €",
          "Gesamtbetrag   119,00 €"]


def test_german_invoice_fields_and_the_buyer_is_not_the_issuer():
    res, f = read(GERMAN)
    assert f.vendor == "Müller Werkzeuge GmbH"
    assert f.invoice_number == "RE-2024-0815"
    assert f.date == "2024-03-05"
    assert (f.subtotal, f.tax, f.total, f.currency) == (100.00, 19.00, 119.00, "EUR")
    assert f.buyer == "Schmidt Bau AG"
    assert any("119,00" in t for t in line_texts(res, "total"))
    assert any("19,00" in t for t in line_texts(res, "tax"))
    assert [li.amount for li in f.line_items] == [89.00, 11.00]


def test_grand_total_after_subtotal_and_rounding_is_the_total():
    res, f = read(["KEDAI MAKAN SRI JAYA SDN BHD", "NO 12, JALAN MERDEKA, 50000 KUALA LUMPUR", "TAX INVOICE",
                   "Nasi Lemak   2   9.00", "Teh Tarik   2   4.00", "Subtotal   13.00", "Service Tax 6%   0.78",
                   "Total   13.78", "Rounding   -0.03", "Grand Total   13.75", "Cash   20.00", "Change   6.25"])
    assert f.total == 13.75
    assert (f.subtotal, f.tax) == (13.00, 0.78)
    assert f.checks["total_after_rounding"] is True
    assert any("13.75" in t for t in line_texts(res, "total"))
    assert f.vendor == "KEDAI MAKAN SRI JAYA SDN BHD" and f.currency is None


def _lines(rows: list[str], height: int = 30) -> list[OcrLine]:
    """OCR lines one under the other (an empty string leaves a blank line)."""
    return [OcrLine(t, [[20, i * 40], [20 + 14 * len(t), i * 40], [20 + 14 * len(t), i * 40 + height],
                        [20, i * 40 + height]], 0.98) for i, t in enumerate(rows) if t]


def test_buyer_block_first_is_not_the_issuer_and_a_number_is_found_by_its_shape():
    f = extract_fields(_lines(["INVOICE", "ACX-2024-0457", "", "Bill To:", "Globex Corporation Ltd",
                               "42 Main Street, Springfield", "", "", "Initech Ltd", "1 Office Park, Austin TX 78701",
                               "", "Consulting services   1,200.00", "Total due   USD 1,250.00"]))
    assert f.buyer == "Globex Corporation Ltd"
    assert f.vendor == "Initech Ltd"
    assert f.invoice_number == "ACX-2024-0457" and f.evidence["invoice_number"].confidence < 0.8
    assert (f.total, f.currency) == (1250.00, "USD")
    # a seller label wins over a company name at the top
    f = extract_fields(_lines(["Globex Corporation Ltd", "Invoice No: 88", "", "From:", "Initech Ltd"]))
    assert f.vendor == "Initech Ltd"


def test_labels_in_spanish_chinese_and_japanese():
    f = extract_fields(_lines(["Ferretería López S.L.", "Factura nº: F-2024-77", "Fecha: 2 de mayo de 2024",
                               "Base imponible   50,00 €", "IVA 21%   10,50 €", "Total a pagar   60,50 €"]))
    assert (f.vendor, f.invoice_number, f.date) == ("Ferretería López S.L.", "F-2024-77", "2024-05-02")
    assert (f.subtotal, f.tax, f.total, f.currency) == (50.00, 10.50, 60.50, "EUR")
    f = extract_fields(_lines(["上海某某贸易有限公司", "发票号码: 04403521", "开票日期: 2024年3月14日", "金额合计 ¥100.00",
                               "税额 ¥13.00", "价税合计 ¥113.00"]))
    assert (f.invoice_number, f.date, f.subtotal, f.tax, f.total, f.currency) == \
        ("04403521", "2024-03-14", 100.00, 13.00, 113.00, "CNY")
    assert f.vendor == "上海某某贸易有限公司"
    f = extract_fields(_lines(["請求書", "山田商事株式会社 御中", "株式会社サンプル", "請求書番号: INV-0042",
                               "発行日: 令和6年3月14日", "小計 ¥10,000", "消費税 ¥1,000", "合計金額 ¥11,000"]))
    assert (f.buyer, f.vendor, f.invoice_number, f.date) == ("山田商事株式会社", "株式会社サンプル", "INV-0042",
                                                            "2024-03-14")
    assert (f.subtotal, f.tax, f.total, f.currency) == (10000.0, 1000.0, 11000.0, "JPY")


def test_amounts_and_dates_in_the_usual_forms():
    assert parse_amount("Total 1.234,56 €") == 1234.56 and parse_amount("$1,234.50") == 1234.5
    assert parse_amount("1 234,56 EUR") == 1234.56 and parse_amount("Rs 1939") == 1939.0
    assert parse_amount("VAT 20%") is None and parse_amount("Date 14.03.2024") is None
    assert parse_date("14. März 2024") == "2024-03-14" and parse_date("14 de marzo de 2024") == "2024-03-14"
    assert parse_date("03/20/2023") == "2023-03-20" and parse_date("04/05/2023", month_first=True) == "2023-04-05"
    assert parse_date("MG12/3-32/ - 36/360") is None


# --- the model -----------------------------------------------------------------------------------------

class ScriptedEngine:
    """A core.vlm Engine that answers with a fixed text (for the validation and merge logic only: what a
    real model answers cannot run here)."""

    def __init__(self, answer: str) -> None:
        from core.vlm.base import Engine, Ledger, TextStream
        from core.vlm.types import GenerationResult

        text = answer

        class _Engine(Engine):
            def __init__(self) -> None:
                self.ledger = Ledger()
                self.prompts: list[str] = []

            def info(self):
                from core.vlm.base import EngineInfo

                return EngineInfo("scripted", "scripted", True)

            def stream(self, messages, params=None, kind="chat"):
                self.prompts.append(" ".join(getattr(p, "text", "") for m in messages for p in m.content))
                return TextStream(iter([text]), lambda: None, lambda: GenerationResult(text, 1, 1, "stop"))

        self.engine = _Engine()


RECEIPT = ["CAFE NOIR SARL", "8 rue Vieille, 69001 Lyon", "Ticket No: T-5531", "Date: 02/04/2024",
           "Sous-total 10,00 €", "TVA 10% 1,00 €", "Total TTC 11,00 €"]


def test_model_fields_are_validated_merged_and_get_evidence():
    from core.ocr.fields_model import extract_fields_with_model

    lines = _lines(RECEIPT)
    answer = ('Here you are:\n```json\n{"vendor": "Cafe Noir SARL", "address": null, "invoice_number": "T-5531", '
              '"date": "2024-04-02", "currency": "eur", "subtotal": "10,00", "tax": 1, "total": null, '
              '"line_items": [], "lines": {"vendor": [0], "invoice_number": [2]}}\n```')
    eng = ScriptedEngine(answer).engine
    f = extract_fields_with_model(lines, eng)
    assert "[2] Ticket No: T-5531" in eng.prompts[0] and '"total"' in eng.prompts[0]
    assert (f.vendor, f.invoice_number, f.date, f.currency) == ("Cafe Noir SARL", "T-5531", "2024-04-02", "EUR")
    assert (f.subtotal, f.tax) == (10.0, 1.0)
    assert f.total == 11.00 and f.evidence["total"].source == "rules"  # the model left it empty
    assert f.address == "8 rue Vieille, 69001 Lyon" and f.evidence["address"].source == "rules"
    ev = f.evidence["vendor"]
    assert ev.source == "model" and ev.lines == [0] and ev.box == [20.0, 0.0, 216.0, 30.0]
    assert f.evidence["subtotal"].source == "model" and "10,00" in f.evidence["subtotal"].text
    assert f.checks["subtotal_plus_tax_equals_total"] is True and f.warnings == []
    assert any("vendor" in x and "CAFE NOIR SARL" in x for x in f.flags)  # the two readings differ in case


def test_invalid_model_answers_are_ignored_with_a_warning():
    from core.ocr.fields_model import extract_fields_with_model

    lines = _lines(RECEIPT)
    rules = extract_fields(lines)
    for answer in ("I cannot read this invoice.", '{"vendor": "X", "total": ', "[1, 2, 3]"):
        f = extract_fields_with_model(lines, ScriptedEngine(answer).engine)
        assert (f.vendor, f.total, f.date) == (rules.vendor, rules.total, rules.date)
        assert len(f.warnings) == 1 and "ignored" in f.warnings[0], f.warnings
    f = extract_fields_with_model(lines, ScriptedEngine(
        '{"total": "eleven", "date": "2024-02-30", "currency": "€", "vendor": ["a"], "tax_id": "FR123456789"}').engine)
    assert (f.total, f.date, f.currency, f.vendor) == (11.0, "2024-04-02", "EUR", "CAFE NOIR SARL")
    assert f.tax_id == "FR123456789" and f.evidence["tax_id"].source == "model"
    assert any("not written in the text" in x for x in f.flags)
    assert sorted(w.split(" ")[2] for w in f.warnings) == ["currency", "date", "total", "vendor"]


def test_tiny_random_model_noise_leaves_the_rules_fields(tiny_engine):
    from core.ocr.fields_model import extract_fields_with_model

    lines = _lines(RECEIPT)
    f = extract_fields_with_model(lines, tiny_engine, max_new_tokens=16)
    rules = extract_fields(lines)
    assert (f.vendor, f.total, f.invoice_number) == (rules.vendor, rules.total, rules.invoice_number)
    assert f.warnings and ("ignored" in f.warnings[0] or "rules" in f.warnings[0]), f.warnings


@pytest.mark.parametrize("text", ["Invoice", "Facture", "Rechnung", "Factura", "发票", "請求書"])
def test_looks_like_invoice_in_several_languages(text):
    from core.ocr.invoice import looks_like_invoice

    totals = {"Invoice": "Total 10.00", "Facture": "Total TTC 10,00", "Rechnung": "Gesamtbetrag 10,00",
              "Factura": "Total a pagar 10,00", "发票": "价税合计 ¥113.00", "請求書": "合計金額 ¥11,000"}
    assert looks_like_invoice(f"{text}\n{totals[text]}")


def test_reading_with_the_model_fills_the_fields_with_the_model_and_the_rules():
    """`vlscope ocr --engine vlm` (and the pages) give the model's schema answer, the rules filling the rest."""
    from core.ocr.registry import OcrRegistry
    from core.settings import Settings
    from core.vlm.base import Engine, EngineInfo, Ledger, TextStream
    from core.vlm.types import GenerationResult

    answers = {"ocr": "\n".join(RECEIPT),
               "ocr-fields": '{"vendor": "Cafe Noir SARL", "invoice_number": "T-5531", "total": null}'}

    class ByKind(Engine):
        def __init__(self) -> None:
            self.ledger = Ledger()
            self.kinds: list[str] = []

        def info(self):
            return EngineInfo("scripted", "scripted", True)

        def stream(self, messages, params=None, kind="chat"):
            self.kinds.append(kind)
            text = answers[kind]
            return TextStream(iter([text]), lambda: None, lambda: GenerationResult(text, 1, 1, "stop"))

    eng = ByKind()
    registry = OcrRegistry(Settings(), model_engine=lambda: eng)
    res = run_ocr(png_bytes(render_lines(RECEIPT, size=26, gap=0.7)),
                  OcrOptions(engine="vlm", tables=False, fields="on"), engines=registry)
    assert "ocr-fields" in eng.kinds
    f = res.fields
    assert f.vendor == "Cafe Noir SARL" and f.evidence["vendor"].source == "model"
    assert f.total == 11.0 and f.evidence["total"].source == "rules"
