"""Invoice and receipt fields from OCR lines, each with its evidence: vendor, address, number, ISO date,
currency, subtotal, tax, total, tax id and line items, with the line(s) and box each came from and a
confidence; labels in English, French, German, Spanish (and Dutch), Chinese and Japanese.

The text is read as visual rows (lines of one height band, left to right) whose parts keep their boxes.
Totals are cross-checked (subtotal + tax = total, line items against the total); a rounding line moves
the total to the one after it; "Grand Total" outranks a plain total; cash and change are never totals.
The buyer's block (bill to, client, Rechnungsempfänger, 御中, ...) is never taken as the issuer, and an
invoice number without a label is found by its shape near the top of the first page.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass, field

from core.ocr.types import FieldEvidence, InvoiceFields, LineItem, OcrLine, OcrResult

# --- labels ------------------------------------------------------------------------------------------
# Each list is tried in order; the patterns are matched on the lower-cased row text.

TITLE = (r"\b(?:tax\s+)?invoice\b|\bcredit\s+note\b|\bavoir\b|\bgutschrift\b|\breceipt\b|\bfacture\b|\brechnung\b|\bfactura\b|\bfactuur\b|\bquittung\b|"
         r"\bbeleg\b|\brecibo\b|\bkassenbon\b|\bticket\b|\bbill\b|发票|收据|小票|請求書|領収書|納品書|レシート")
NUMBER_LABELS = [
    r"\b(?:tax\s+)?invoice\s*(?:no\.?|number|num\.?|#|n[°ºo]\.?|id)(?![a-z])",
    r"\binv\.?\s*(?:no\.?|#|num)", r"\b(?:bill|receipt|document|doc|voucher)\s*(?:no\.?|number|#)",
    r"\bdoc\s?no\b", r"\bfacture\s*(?:n[°ºo]\.?|num[ée]ro|#)", r"\bn[°ºo]\.?\s*(?:de\s+)?facture",
    r"\bnum[ée]ro\s+de\s+facture", r"rechnungs?\s*-?\s*(?:nr\.?|nummer|no\.?)(?![a-z])", r"rechnung\b[^:]{0,14}?\bnr\b\.?",
    r"\bbeleg\s*-?\s*(?:nr\.?|nummer)", r"\bfactura\s*(?:n[°ºo]\.?|n[úu]m(?:ero|\.)?|#)",
    r"\bn[úu]mero\s+de\s+factura", r"\bn[°ºo]\.?\s*(?:de\s+)?factura", r"\bfactuur\s*-?\s*(?:nr\.?|nummer)",
    r"发票号码|发票号|单据号|收据号|票据号|单号", r"請求書番号|請求番号|伝票番号|領収書番号|インボイス番号|請求書\s*no",
]
TITLE_NUMBER = r"(?:^|\s)(?:tax\s+)?(?:invoice|facture|rechnung|factura|factuur|receipt|avoir|gutschrift|credit\s+note)\s*[:#]?\s*(?=[a-z]{0,6}[-/#]?\d)"
WEAK_NUMBER_LABEL = r"(?:^|\s)(?:no|nr|n°|nº)\.?\s*[:#]?\s*(?=[a-z]{0,6}[-/]?\d)|(?:^|\s)#\s*(?=\w*\d)"
NOT_NUMBER = (r"order|customer|client|account|kunden|auftrag|bestell|commande|pedido|cliente|booking|reference|"
              r"\bref\b|réf|referenz|po\b|tel|phone|fax|vat|tax\s*id|gst|tin\b|siret|siren|iban|bic|swift|"
              r"ust|mwst|steuer|member|cashier|table|page|seite|注文|客户|会員|電話|登録")
DATE_LABELS = [
    r"invoice\s*date|date\s+of\s+(?:issue|invoice)|issue\s*date|date\s+issued|billing\s+date|"
    r"date\s+de\s+(?:la\s+)?facture|date\s+d['’]\s?[ée]mission|date\s+de\s+facturation|rechnungsdatum|belegdatum|"
    r"ausstellungsdatum|fecha\s+de\s+(?:la\s+)?(?:factura|emisi[óo]n|expedici[óo]n)|factuurdatum|开票日期|"
    r"請求日|発行日|請求書日付|issued\s+(?:at|on)|ausgestellt\s+am",
    r"\bdate\b|\bdated\b|\bdatum\b|\bfecha\b|日期|日付|\b(?:vom|du|del)\s+(?=\d)",
]
NOT_DATE = (r"due|limite|paiement|payment|pay\s+by|zahlbar|zahlungs|pago|[ée]ch[ée]ance|f[äa]llig|vencimiento|vervaldatum|delivery|livraison|liefer|leistung|entrega|"
            r"order|commande|bestell|pedido|period|p[ée]riode|zeitraum|periodo|check[\s-]?(?:in|out)|支払期限|期限")
TOTAL_LABELS = [  # (priority, pattern)
    (5, r"grand\s*-?\s*total|gran\s+total|total\s+g[ée]n[ée]ral|gesamtsumme|gesamtbetrag|rechnungsbetrag|"
        r"endbetrag|bruttobetrag|gesamt\s*brutto|summe\s*brutto|total\s*ttc|montant\s*ttc|total\s*\(?\s*ttc|"
        r"totaal\s*incl|importe\s+total|total\s+factura|total\s+(?:con|incl\.?)\s+iva|"
        r"total\s*(?:incl\.?|inclusive|including|incl)\b|total\s*with\s*(?:gst|vat|tax)|total\s+amount|"
        r"rounded\s+total|total\s+after\s+rounding|total\s+sales\s*\(?\s*incl|bruttosumme|rechnungssumme\s+brutto|"
        r"summe\s+brutto|\bincl(?:usive|\.)?\s+(?:of\s+)?(?:gst|vat|tax)|价税合计|合计金额|总计|税込合計|総合計|合計金額|ご請求金額|請求金額"),
    (4, r"amount\s+(?:due|payable)|due\s+payable|payable\s+amount|balance\s+due|total\s+(?:due|payable|to\s+pay)|net\s+payable|"
        r"net\s+[àa]\s+payer|total\s+[àa]\s+payer|reste\s+[àa]\s+payer|solde\s+[àa]\s+payer|montant\s+[àa]\s+payer|"
        r"zu\s+zahlen|zahlbetrag|total\s+a\s+pagar|importe\s+a\s+pagar|te\s+betalen|应付|实付|应收|お支払金額|お支払い金額"),
    (3, r"\btotal\b|\btotaal\b|\bsumme\b|\bgesamt\b|\bmontant\b|\bimporte\b|合计|合計|total\s*:"),
]
NOT_TOTAL = (r"total\s*(?:qty|quantity|items?|pcs|pieces|units|weight|discount|saving|savings|tax|vat|gst|tva|mwst|"
             r"iva|ht\b|hors|excl|exclusive|excluding|ex\.?\s|before|net|netto|sans|sin\b|discounts?)|"
             r"(?:tax|vat|gst|tva)\s*total|sub\s*-?\s*total|zwischensumme|sous\s*-?\s*total|subtotaal|小计|小計|"
             r"total\s+sales\s*\(?\s*excl|total\s+number|number\s+of|anzahl|nombre\s+d|zuschl[äa]ge|"
             r"abschl[äa]ge|allowances?|\brabatt|\bremise|\bdiscount|anzahlung|acompte|prepaid|prepayment|"
             r"already\s+paid|d[ée]j[àa]\s+(?:pay|r[ée]gl)|erhalten|geleistet|positionssumme|summe\s+positionen")
SUBTOTAL_LABELS = (r"sub\s*-?\s*total|(?:summe|betrag|total)\s+(?:ohne|exkl\.?|excl\.?|zzgl\.?)\s*(?:ust|mwst)|"
                   r"nettosumme|positionssumme|summe\s+positionen|sous\s*-?\s*total|zwischensumme|subtotaal|net\s+amount|net\s+total|"
                   r"total\s*(?:before|excl\.?|excluding|exclusive|ex\.?|w/o|without|net)\b|amount\s+before\s+tax|"
                   r"total\s+sales\s*\(?\s*excl|total\s*ht\b|montant\s*ht\b|total\s+hors\s+taxes?|base\s+ht|"
                   r"nettobetrag|summe\s*netto|gesamt\s*netto|netto\s*(?:betrag|summe|gesamt)|warenwert|"
                   r"base\s+imponible|importe\s+neto|total\s+sin\s+iva|totaal\s+excl|小计|小計|税抜|不含税|金额合计")
TAX_LABELS = (r"\b(?:sales\s+)?tax\b|\bvat\b|\bgst\b|\bhst\b|\bpst\b|\btva\b|\btaxes?\b|\bmwst\b|\bmehrwertsteuer\b|"
              r"\bust\b|\bumsatzsteuer\b|\bsteuer(?:betrag)?\b|\biva\b|\bimpuestos?\b|\bigv\b|\bbtw\b|税额|税金|增值税|"
              r"消費税|税額|内税")
NOT_TAX = (r"tax\s*(?:id|no\b|number|reg|code|invoice|exempt|rate|point)|vat\s*(?:id|no\b|number|reg|invoice)|"
           r"gst\s*(?:id|no\b|reg|number|summary|analysis)|(?:tax|gst|vat)\s*(?:summary|analysis)|"
           r"\b(?:tin|gstin|siret|siren|ust-?id|steuernummer|steuer-?nr|usi?t?-?idnr|nif|cif|rfc)\b|"
           r"not\s+a\s+vat|incl(?:\.|usive|uding)?\s+(?:of\s+)?(?:gst|vat|tax)|n[°º]\s*tva|tva\s*(?:intra|client|:)|"
           r"税号|登録番号")
ROUNDING = r"round(?:ing|ed)?\s*(?:adj|off|diff)?|\barrondi|\brundung|\bredondeo|\bafronding|抹零|舍入|端数"
CASH = (r"\bcash\b|\bchange\b|\btender(?:ed)?\b|\bpaid\b|\bpayment\b|\bcard\b|\bvisa\b|\bmaster|\brendu|"
        r"\brückgeld|\bbar\b|\bgegeben|\bcambio\b|\befectivo\b|\bentregado|找零|现金|お釣り|お預り|釣銭|預り")
SELLER_LABELS = (r"\b(?:sold\s+by|seller|vendor|supplier|issued\s+by|billed\s+by|service\s+provider|from)\b|"
                 r"\bvendeur\b|\bfournisseur\b|[ée]metteur|\bprestataire\b|\bverk[äa]ufer\b|\blieferant\b|"
                 r"\brechnungs?\s*-?\s*(?:er)?steller\b|\baussteller\b|\bvendedor\b|\bproveedor\b|\bemisor\b|\bleverancier\b|销售方|销方|卖方|开票方|"
                 r"発行元|請求元")
BUYER_LABELS = (r"\b(?:bill(?:ed)?\s+to|ship(?:ped)?\s+to|sold\s+to|invoice\s+to|deliver(?:ed|y)?\s+to|"
                r"customer|client|recipient|buyer|consignee|attn|guest|patient|passenger|member)\b|factur[ée]\s+[àa]|adresse\s+de\s+(?:facturation|"
                r"livraison)|\bdestinataire\b|livr[ée]\s+[àa]|\brechnungsempf[äa]nger|\brechnungsadresse|"
                r"\bkunde\b|\bk[äa]ufer\b|\blieferadresse|\bwarenempf[äa]nger|leistungsempf[äa]nger|"
                r"\bfacturar\s+a\b|\bcliente\b|\bdestinatario\b|\bcomprador\b|\bklant\b|\bfactuuradres|"
                r"\b(?:aflever|lever)adres|\bt\.a\.v\.|"
                r"购买方|购方|买方|客户|請求先|お客様")
BUYER_SUFFIX = r"(?:御中|様|殿)\s*$"
COMPANY_WORDS = re.compile(r"\b(?:inc|ltd|llc|llp|gmbh|mbh|sarl|sas|sasu|eurl|s\.a\.|s\.l\.|srl|s\.r\.l\.?|spa|"
                           r"b\.v\.|n\.v\.|plc|pvt|corp|corporation|company|co\.|limited|sdn\.?\s*bhd|bhd|sdn|"
                           r"enterprise|trading|a/s|aps|kft|sp\.\s*z\s*o\.o\.?|spółka|e\.v\.|e\.k\.)(?![\w])\.?|"
                           r"株式会社|有限会社|合同会社|有限公司|股份|公司|商店|商事", re.I)
COMPANY_SHORT = re.compile(r"\b(?:AG|KG|UG|SE|SA|SL|BV|NV|AB|AS|OY|GIE|SNC|SCS|LP)\b\.?(?:\s*&\s*Co\.?\s*KG)?")


class _Company:
    """Legal-form words (Ltd, GmbH, SARL, Sdn Bhd, 株式会社, ...); two-letter forms (AG, SA, BV) only in capitals."""

    @staticmethod
    def search(text: str) -> re.Match | None:
        return COMPANY_WORDS.search(text) or COMPANY_SHORT.search(text)


COMPANY = _Company()
STREET = re.compile(r"\d.*\b(?:street|st\b|road|rd\b|avenue|ave\b|blvd|boulevard|lane|ln\b|drive|dr\b|way|"
                    r"court|ct\b|place|pl\b|square|suite|floor|building|jalan|jln|lorong|taman|lot|no\.?|"
                    r"rue|avenue|chemin|all[ée]e|impasse|quai|cours|place|stra(?:ss|ß)e|str\.|weg|platz|allee|gasse|"
                    r"ring|damm|calle|avda|avenida|c/|plaza|paseo|carrer|straat|laan|plein)\b|"
                    r"\b(?:street|road|avenue|rue|chemin|stra(?:ss|ß)e|calle|avenida|jalan|taman)\b.*\d|"
                    r"\b\d{4,5}\s+[A-Za-zÀ-ÿ]{3,}|\b[A-Z]{1,2}\d{1,2}[A-Z]?\s\d[A-Z]{2}\b|〒|\d{3}-\d{4}|"
                    r"[都道府県市区町村]|[省市区县路街号]", re.I)
CONTACT = re.compile(r"\b(?:tel|phone|fax|mobile|mob|hp|email|e-mail|telefon|téléphone|tél|teléfono|website)\b|"
                     r"\b(?:web|site|internet)\s*[:：]|@|\bwww\.|https?:|電話|电话|傳真|传真", re.I)
REGISTRATION = re.compile(r"^\(?\s*(?:co\.?\s*(?:reg\.?\s*)?no\.?\s*:?\s*)?\d{4,}\s?-?\s?[A-Z]{1,2}\s*\)?$|"
                          r"^\(\s*[\dA-Z][\dA-Z\-]{4,}\s*\)$|"
                          r"\b(?:gst|vat|tax|tin|siret|siren|ust|reg(?:istration)?|company)\s*(?:id|no|reg|number)?\b"
                          r"[\s.:#]*[A-Z0-9\- ]{6,}|\bcompany\s+no\b", re.I)
HEADER_WORDS = (r"description|item|qty|quantity|price|amount|unit|rate|total|article|d[ée]signation|quantit[ée]|"
                r"prix|montant|bezeichnung|artikel|menge|preis|betrag|einzelpreis|descripci[óo]n|cantidad|precio|"
                r"importe|omschrijving|aantal|prijs|bedrag|品名|数量|单价|金额|品目|単価|金額|摘要")
ITEM_STOP = re.compile(r"total|tax|vat|gst|charges\b|credit|discount|balance|amount\s+due|paid|payment|shipping|"
                       r"subtotal|invoice|phone|date|account|number|cash|change|rounding|tender|tva|mwst|steuer|"
                       r"summe|gesamt|netto|brutto|iva|impuesto|montant|solde|remise|rabatt|descuento|"
                       r"合计|合計|小计|小計|税|找零|お釣り", re.I)

MONTHS = {
    # English, French, German, Spanish, Dutch, Italian (first letters that tell them apart)
    "jan": 1, "january": 1, "janv": 1, "janvier": 1, "januar": 1, "jänner": 1, "enero": 1, "ene": 1, "januari": 1,
    "feb": 2, "february": 2, "fév": 2, "févr": 2, "février": 2, "fevrier": 2, "februar": 2, "febrero": 2,
    "februari": 2, "mar": 3, "march": 3, "mars": 3, "märz": 3, "marz": 3, "mrz": 3, "marzo": 3, "maart": 3,
    "apr": 4, "april": 4, "avr": 4, "avril": 4, "abril": 4, "abr": 4, "may": 5, "mai": 5, "mayo": 5, "mei": 5,
    "jun": 6, "june": 6, "juin": 6, "juni": 6, "junio": 6, "jul": 7, "july": 7, "juil": 7, "juillet": 7,
    "juli": 7, "julio": 7, "aug": 8, "august": 8, "août": 8, "aout": 8, "agosto": 8, "ago": 8, "augustus": 8,
    "sep": 9, "sept": 9, "september": 9, "septembre": 9, "septiembre": 9, "setiembre": 9, "oct": 10,
    "october": 10, "octobre": 10, "oktober": 10, "okt": 10, "octubre": 10, "nov": 11, "november": 11,
    "novembre": 11, "noviembre": 11, "dec": 12, "december": 12, "déc": 12, "décembre": 12, "decembre": 12,
    "dezember": 12, "dez": 12, "diciembre": 12, "dic": 12,
}
MONTH_WORD = r"([a-zäéûô]{3,10})\.?"
ERAS = {"令和": 2018, "平成": 1988, "昭和": 1925}
CURRENCIES = [  # (pattern on the lower-cased text, ISO code)
    (r"₹|\brs\.?\s?-?\d|\binr\b|\brupees?\b", "INR"), (r"€|\beur\b|\beuros?\b", "EUR"), (r"£|\bgbp\b", "GBP"),
    (r"\bchf\b|\bsfr\b", "CHF"), (r"\bcad\b|c\$|ca\$", "CAD"), (r"\baud\b|a\$|au\$", "AUD"),
    (r"\bsgd\b|s\$", "SGD"), (r"\bhkd\b|hk\$", "HKD"), (r"\busd\b|us\$|\$\s?\d|\d\s?\$", "USD"),
    (r"\bmyr\b|\brm\s?\d|\(rm\)|\brm\b(?=\s*$)", "MYR"), (r"\bpln\b|zł", "PLN"), (r"\bjpy\b|円|\byen\b", "JPY"),
    (r"\bcny\b|\brmb\b|元|人民币", "CNY"), (r"\bsek\b", "SEK"), (r"\bnok\b", "NOK"), (r"\bdkk\b", "DKK"),
    (r"\bmxn\b", "MXN"), (r"\bbrl\b|r\$", "BRL"), (r"\bidr\b|\brp\.?\s?\d", "IDR"), (r"\bkrw\b|₩", "KRW"),
    (r"¥|￥", "YEN?"),  # JPY or CNY: decided by the script of the page
]
CURRENCY_MARK = r"(?:[$€£¥￥₹₩]|rs\.?|rm|inr|usd|eur|gbp|chf|cad|aud|sgd|myr|pln|jpy|cny|rmb|idr|rp\.?|zł|円|元|fr\.?)"
NUMBER = re.compile(r"(?<![\w.,/:\-])(\(?-?\s?)(\d{1,3}(?:[,.'’ \u00a0]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
                    r"(?![\w/:%]|[.,]\d|\s?%)")
TOL = 0.011


def looks_like_invoice(text: str) -> bool:
    """True when the text reads like an invoice or receipt (worth extracting fields), in any of the languages."""
    t = text.lower()
    title = re.search(TITLE, t) is not None
    money = any(re.search(p, t) for _, p in TOTAL_LABELS) or re.search(SUBTOTAL_LABELS, t) is not None
    return title and money or ("amount" in t and title)


# --- rows --------------------------------------------------------------------------------------------

@dataclass
class Part:
    """One OCR line inside a row."""

    text: str
    box: tuple[float, float, float, float]
    index: int  # index of the line in its page's lines
    confidence: float
    more: list[int] = field(default_factory=list)  # indices of further lines joined into this part (words)


@dataclass
class Row:
    """A visual row: lines of one height band on one page, left to right."""

    page: int
    parts: list[Part] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.parts)

    @property
    def low(self) -> str:
        return self.text.lower()

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (min(p.box[0] for p in self.parts), min(p.box[1] for p in self.parts),
                max(p.box[2] for p in self.parts), max(p.box[3] for p in self.parts))

    @property
    def height(self) -> float:
        hs = sorted(p.box[3] - p.box[1] for p in self.parts)
        return hs[len(hs) // 2]


def _page_rows(lines: list[OcrLine], page: int) -> list[Row]:
    """Lines grouped into visual rows, each row left to right, rows top to bottom. A line joins a row when
    it overlaps the row's first line by half its height and the two are of comparable height (a tall line,
    such as text running up the margin, stays a row of its own)."""
    rows: list[Row] = []
    order = sorted(range(len(lines)), key=lambda i: (lines[i].bounds[1] + lines[i].bounds[3]) / 2)
    for i in order:
        ln = lines[i]
        if not ln.text.strip():
            continue
        top, bot = ln.bounds[1], ln.bounds[3]
        h = max(bot - top, 1e-6)
        part = Part(" ".join(ln.text.split()), ln.bounds, i, float(ln.confidence))
        for r in rows[-4:][::-1]:
            rtop, rbot = r.parts[0].box[1], r.parts[0].box[3]
            rh = max(rbot - rtop, 1e-6)
            overlap = min(bot, rbot) - max(top, rtop)
            if overlap > 0.5 * min(h, rh) and min(h, rh) >= 0.5 * max(h, rh):
                r.parts.append(part)
                break
        else:
            rows.append(Row(page, [part]))
    for r in rows:
        r.parts = _phrases(sorted(r.parts, key=lambda p: p.box[0]))
    rows.sort(key=lambda r: r.box[1])
    return rows


def _phrases(parts: list[Part]) -> list[Part]:
    """Neighbouring parts of a row closer than a line height joined into one (an engine that gives one box
    per word: "SWC" "ENTERPRISE" "SDN" "BHD"); an amount stays apart from the words before it."""
    out: list[Part] = []
    for p in parts:
        if out:
            q = out[-1]
            h = min(q.box[3] - q.box[1], p.box[3] - p.box[1])
            if p.box[0] - q.box[2] < 0.9 * h and not amounts(p.text) and not amounts(q.text) and \
                    not q.text.endswith(":"):
                out[-1] = Part(q.text + " " + p.text, (q.box[0], min(q.box[1], p.box[1]), p.box[2],
                                                       max(q.box[3], p.box[3])),
                               q.index, (q.confidence + p.confidence) / 2, q.more + [p.index] + p.more)
                continue
        out.append(p)
    return out


def rows_of(result: OcrResult | list[OcrLine]) -> list[Row]:
    """The visual rows of a result (all pages, in page order) or of one page's lines."""
    if isinstance(result, OcrResult):
        return [r for p in result.pages for r in _page_rows(p.lines, p.index)]
    return _page_rows(list(result), 0)


def _rows(lines: list[OcrLine]) -> list[str]:
    """Lines grouped into visual rows (same height band), joined left to right (text only)."""
    return [r.text for r in _page_rows(lines, 0)]


def evidence(rows: list[Row], parts: list[Part] | None = None, weight: float = 0.9) -> FieldEvidence:
    """Where a value was read: the rows (or only some of their parts), their box and a confidence."""
    chosen = parts if parts else [p for r in rows for p in r.parts]
    page = rows[0].page if rows else 0
    if not chosen:
        return FieldEvidence("", page, [], [], 0.0)
    box = [min(p.box[0] for p in chosen), min(p.box[1] for p in chosen), max(p.box[2] for p in chosen),
           max(p.box[3] for p in chosen)]
    conf = sum(p.confidence for p in chosen) / len(chosen)
    text = " | ".join(r.text for r in rows) if not parts else " ".join(p.text for p in chosen)
    return FieldEvidence(text, page, [round(v, 1) for v in box], sorted({i for p in chosen for i in [p.index] + p.more}),
                         round(max(0.0, min(1.0, conf * weight)), 3))


# --- values ------------------------------------------------------------------------------------------

def _number(raw: str) -> float | None:
    """A number written with any of the usual separators ("1,234.56", "1.234,56", "1 234,56", "12,5")."""
    s = raw.replace("\u00a0", " ").replace("’", "'").strip()
    neg = s.startswith("-") or s.startswith("(")
    s = s.lstrip("-( ").rstrip(") ")
    m = re.fullmatch(r"(\d{1,3}(?:([,.' ])\d{3})*)(?:([.,])(\d{1,2}))?|(\d+)(?:([.,])(\d{1,2}))?", s)
    if not m:
        return None
    if m.group(5) is not None:
        whole, dec = m.group(5), m.group(7)
    else:
        whole, sep, dsep, dec = m.group(1), m.group(2), m.group(3), m.group(4)
        if sep and dsep and sep == dsep:
            return None
        whole = re.sub(r"[,.' ]", "", whole)
    try:
        value = float(whole + ("." + dec if dec else ""))
    except ValueError:
        return None
    return -value if neg else value


def amounts(text: str) -> list[tuple[float, int, int, bool]]:
    """Money amounts in a text: (value, start, end, has_currency_mark) for numbers with two decimals, or
    any number written next to a currency sign or code ("Rs 1939", "1 200 円"); percentages, dates, times
    and phone-like digit groups are left out."""
    out = []
    low = text.lower()
    for m in NUMBER.finditer(low):
        raw = (m.group(1) or "") + m.group(2)
        before, after = low[max(0, m.start() - 5):m.start()], low[m.end():m.end() + 4]
        mark = re.search(CURRENCY_MARK + r"\s?[-(]?\s?$", before) is not None or \
            re.match(r"\s?" + CURRENCY_MARK, after) is not None
        decimals = re.search(r"[.,]\d{2}$", m.group(2)) is not None
        if not decimals and not mark:
            continue
        if not decimals and re.search(r"\d[ .]\d", m.group(2)) and not re.search(r"[,.' ]\d{3}$", m.group(2)):
            continue
        value = _number(raw)
        if value is not None:
            out.append((value, m.start(), m.end(), mark))
    return out


def parse_amount(text: str) -> float | None:
    """The last money amount in a text (e.g. "$1,234.50" -> 1234.5, "1.234,50 €" -> 1234.5), None when none."""
    found = amounts(text)
    return found[-1][0] if found else None


def _date(y: int, mo: int, d: int) -> str | None:
    try:
        return dt.date(y, mo, d).isoformat()
    except ValueError:
        return None


def parse_date(text: str, month_first: bool = False) -> str | None:
    """The first date in a text as ISO YYYY-MM-DD (day first for ambiguous numeric dates unless
    `month_first`), in numeric, written-month (en, fr, de, es, nl), CJK (2024年3月14日) and Japanese era
    (令和6年3月14日) forms; None when there is none."""
    t = text.lower()
    cands: list[tuple[int, int, int, int]] = []  # (position, y, m, d)
    for m in re.finditer(r"(令和|平成|昭和)\s*(\d{1,2}|元)\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日", text):
        year = ERAS[m.group(1)] + (1 if m.group(2) == "元" else int(m.group(2)))
        cands.append((m.start(), year, int(m.group(3)), int(m.group(4))))
    for m in re.finditer(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日?", text):
        cands.append((m.start(), int(m.group(1)), int(m.group(2)), int(m.group(3))))
    for m in re.finditer(r"(?<![\d/.-])(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![\d/-])", t):
        cands.append((m.start(), int(m.group(1)), int(m.group(3)), int(m.group(4))))
    for m in re.finditer(MONTH_WORD + r"\s+(\d{1,2})(?:st|nd|rd|th)?\s*,?\s*(\d{4})\b", t):
        if m.group(1) in MONTHS:
            cands.append((m.start(), int(m.group(3)), MONTHS[m.group(1)], int(m.group(2))))
    for m in re.finditer(r"(?<!\d)(\d{1,2})(?:st|nd|rd|th|er|\.)?(?:\s+de)?[\s\-/.]*" + MONTH_WORD +
                         r"(?:\s+de)?[\s,\-/.]+(\d{4}|\d{2})(?!\d)", t):
        if m.group(2) in MONTHS:
            y = int(m.group(3))
            cands.append((m.start(), y + 2000 if y < 100 else y, MONTHS[m.group(2)], int(m.group(1))))
    for m in re.finditer(r"(?<![\d.,/-])(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?![\d,/-]|\.\d)", t):
        a, b, y = int(m.group(1)), int(m.group(3)), int(m.group(4))
        y = y + 2000 if y < 100 else y
        if a <= 12 < b or (month_first and a <= 12 and b <= 31):
            cands.append((m.start(), y, a, b))
        else:
            cands.append((m.start(), y, b, a))
    for _, y, mo, d in sorted(cands):
        if 1970 <= y <= 2100:
            iso = _date(y, mo, d)
            if iso:
                return iso
    return None


def _month_first(low: str) -> bool:
    """Whether the document writes numeric dates month first: told by a date that can only be read one
    way (11/17/2017, 17/11/2017), else by US dollars without another currency."""
    days_first = months_first = 0
    for m in re.finditer(r"(?<![\d.,])(\d{1,2})[/.-](\d{1,2})[/.-](?:\d{4}|\d{2})(?![\d,])", low):
        a, b = int(m.group(1)), int(m.group(2))
        days_first += a > 12 >= b
        months_first += b > 12 >= a
    if days_first or months_first:
        return months_first > days_first
    return bool(re.search(r"\busd\b|\$\s?\d", low)) and not re.search(r"€|£|₹|\brm\b|\brs\.?\s?\d", low)


def _currency(low: str, near: str = "") -> str | None:
    """The currency written next to the total when there is one, else the most frequent one."""
    def pick(text: str) -> str | None:
        counts = {code: len(re.findall(pat, text)) for pat, code in CURRENCIES}
        if max(counts.values(), default=0) == 0:
            return None
        code = max(counts, key=lambda k: counts[k])
        if code == "YEN?":  # ¥ is yen in Japanese text (kana), yuan in Chinese text
            code = "CNY" if re.search(r"[\u4e00-\u9fff]", low) and not re.search(r"[\u3040-\u30ff]", low) else "JPY"
        return code

    return pick(near) or pick(low)


# --- the fields --------------------------------------------------------------------------------------

def _fuzzy(low: str, word: str) -> bool:
    """True when one or two adjacent words of the row read like `word` (OCR dropped or swapped a letter)."""
    toks = re.findall(r"[a-z]+", low)
    for i in range(len(toks)):
        for cand in (toks[i], toks[i] + (toks[i + 1] if i + 1 < len(toks) else "")):
            if len(cand) >= len(word) - 2 and difflib.SequenceMatcher(None, cand, word).ratio() >= 0.8:
                return True
    return False


@dataclass
class Slot:
    """A money label on a row and the amount after it (the last one before the next label)."""

    kind: str  # subtotal, tax, total, rounding, cash, other
    prio: int
    row: int
    label: str
    amount: float | None = None
    marked: bool = False
    parts: list[Part] = field(default_factory=list)
    extra_rows: list[Row] = field(default_factory=list)


def classify(label: str) -> tuple[str, int]:
    """What a label on a row announces: (kind, priority) with kind subtotal, tax, total, rounding, cash or
    other (priority ranks totals: 5 grand total, 4 amount due, 3 total)."""
    r = label.lower()
    if re.search(SUBTOTAL_LABELS, r):
        return "subtotal", 0
    if (re.search(ROUNDING, r) or _fuzzy(r, "rounding")) and not re.search(r"total", r):
        return "rounding", 0
    if re.search(CASH, r) and not re.search(r"total|amount\s+due|summe|合计|合計|à\s+payer", r):
        return "cash", 0
    if re.search(NOT_TOTAL, r):
        if re.search(r"(?:total\s*|\b)(?:tax(?:es)?|vat|gst|tva|mwst|iva|ust)\b", r) and not re.search(NOT_TAX, r):
            return "tax", 0
        return "other", 0
    for prio, pat in TOTAL_LABELS:
        if re.search(pat, r):
            return "total", prio
    if re.search(TAX_LABELS, r) and not re.search(NOT_TAX, r):
        return "tax", 0
    if re.match(r"^\W*t\w*", r) and _fuzzy(r, "total"):
        return "total", 2
    return "other", 0


def _money_slots(rows: list[Row]) -> list[Slot]:
    """Every money label of every row with its amount. A row is read as text pieces and amounts, left to
    right; a piece with a label starts a slot, the amounts after it belong to it (the last one is its
    value); a short piece ("(RM)", "€ TTC") does not interrupt a slot. A label with no amount on its row
    takes the amount alone on the row below it."""
    slots: list[Slot] = []
    for i, row in enumerate(rows):
        current: Slot | None = None
        for part in row.parts:
            pos = 0
            found = amounts(part.text)
            pieces: list[tuple[str, tuple[float, bool] | None]] = []
            for value, start, end, mark in found:
                pieces.append((part.text[pos:start], None))
                pieces.append(("", (value, mark)))
                pos = end
            pieces.append((part.text[pos:], None))
            for text, amt in pieces:
                if amt is not None:
                    if current is not None:
                        current.amount, current.marked = amt
                        if part not in current.parts:
                            current.parts.append(part)
                    continue
                letters = len(re.findall(r"[^\W\d_]", text))
                if letters == 0:
                    continue
                kind, prio = classify(text)
                if kind == "other" and (letters < 4 or re.fullmatch(r"\W*(?:" + CURRENCY_MARK + r"|ttc|ht|incl\.?|excl\.?|"
                                                                  r"brutto|netto|net|gross)\W*", text.lower())):
                    continue  # a currency, a unit or a short word: the slot goes on
                current = Slot(kind, prio, i, text.strip(), parts=[part])
                slots.append(current)
        header = len(row.parts) >= 3 and not amounts(row.text)
        waiting = [s for s in slots if s.row == i and s.amount is None and s.kind != "other"]
        if header and waiting:
            _from_column(waiting, rows, i)
            continue
        for slot in waiting:
            if i + 1 >= len(rows) or rows[i + 1].page != row.page:
                continue
            label = slot.parts[0]
            h = label.box[3] - label.box[1]
            below = [p for p in rows[i + 1].parts if p.box[2] > label.box[0] and p.box[0] < label.box[2] + 3 * h]
            if below and len(re.findall(r"[^\W\d_]", " ".join(p.text for p in below))) <= 4:
                got = [a for p in below for a in amounts(p.text)]
                if got:
                    slot.amount, slot.marked = got[0][0], got[0][3]
                    slot.parts += below
                    slot.extra_rows.append(rows[i + 1])
    return [s for s in slots if s.kind != "other"]


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    return min(a[2], b[2]) - max(a[0], b[0])


def _from_column(slots: list[Slot], rows: list[Row], i: int) -> None:
    """Labels of a header row ("Nettobetrag | MwSt-Betrag | Endbetrag") take the amount under each of them
    in the last row of the block of amount rows below (the sum row when one rate row per tax rate comes
    first)."""
    block: list[Row] = []
    for r in rows[i + 1:i + 7]:
        if r.page != rows[i].page:
            break
        if amounts(r.text):
            block.append(r)
        elif block:
            break
    if not block:
        return
    last = block[-1]
    for slot in slots:
        label = slot.parts[0]
        cands = [(p, _overlap(label.box, p.box)) for p in last.parts if amounts(p.text)]
        cands = [(p, o) for p, o in cands if o > 0]
        if not cands:
            continue
        best = max(cands, key=lambda c: (c[1], -c[0].box[0]))[0]
        got = amounts(best.text)
        slot.amount, slot.marked = got[-1][0], got[-1][3]
        slot.parts.append(best)
        slot.extra_rows.append(last)


def _choose_money(slots: list[Slot], rows: list[Row]) -> dict:
    """subtotal, tax and total from the slots: a subtotal, tax and total that add up win; a total after a
    rounding line wins over the one before it; else the highest-ranked total (the largest of its rank),
    the first subtotal and the tax line that says it is the total tax (or the only one)."""
    def ev(s: Slot, weight: float):
        return s.amount, [rows[s.row]] + s.extra_rows, s.parts, weight

    subs = [s for s in slots if s.kind == "subtotal" and s.amount is not None]
    taxes = [s for s in slots if s.kind == "tax" and s.amount is not None]
    totals = [s for s in slots if s.kind == "total" and s.amount is not None]
    rounding = next((s for s in reversed(slots) if s.kind == "rounding" and s.amount is not None
                     and abs(s.amount) < 1.0), None)
    out: dict = {}
    tol = lambda a: TOL + 0.002 * abs(a)  # noqa: E731
    choice = None
    if rounding is not None:
        after = [t for t in totals if t.row > rounding.row]
        if after:
            choice = max(after, key=lambda t: (t.prio, t.row))
            before = [t for t in totals if t.row < rounding.row]
            if before and abs(before[-1].amount + rounding.amount - choice.amount) <= tol(choice.amount):
                out["rounded"] = True
    # a triple that adds up
    best = None
    for t in ([choice] if choice is not None else totals):
        for s in subs:
            for x in taxes + [None]:
                tax = x.amount if x is not None else 0.0
                if abs(s.amount + tax - t.amount) <= tol(t.amount) and (x is not None or abs(s.amount - t.amount) < 1e-9):
                    key = (t.prio, x is not None, -abs(s.row - t.row))
                    if best is None or key > best[0]:
                        best = (key, s, x, t)
    if best is not None:
        _, s, x, t = best
        out["subtotal"] = ev(s, 0.95)
        if x is not None:
            out["tax"] = ev(x, 0.95)
        out["total"] = ev(t, 0.95)
        return out
    if choice is None and totals:
        top = max(t.prio for t in totals)
        choice = max((t for t in totals if t.prio == top), key=lambda t: (t.amount, -t.row))
    if choice is not None:
        out["total"] = ev(choice, {5: 0.85, 4: 0.8, 3: 0.7}.get(choice.prio, 0.55))
    if subs:
        out["subtotal"] = ev(subs[0], 0.75)
    if taxes:
        labelled = [x for x in taxes if re.search(r"total|summe|gesamt|montant|betrag", x.label.lower())]
        out["tax"] = ev((labelled or taxes)[0], 0.75)
    if "total" not in out and "subtotal" in out and "tax" in out:
        out["total"] = (round(out["subtotal"][0] + out["tax"][0], 2), [], [], 0.5)
    return out


def _label_value(rows: list[Row], patterns: list[str], value: str, exclude: str | None = None,
                 below: int = 1) -> tuple[str, list[Row], list[Part]] | None:
    """The first `value` after a label: on the label's row (right of it) or in the rows below it."""
    for i, row in enumerate(rows):
        for p in patterns:
            m = re.search(p, row.text, flags=re.I)
            if not m or (exclude and re.search(exclude, row.text[:m.start()] + row.text[m.start():m.end() + 12],
                                              flags=re.I)):
                continue
            v = re.search(value, row.text[m.end():], flags=re.I)
            if v:
                return (v.group(1) if v.groups() else v.group(0)), [row], _parts_at(row, m.start(), m.end() + v.end())
            # the value under the label, in the same column
            label = _part_at(row, m.start())
            for r in rows[i + 1:i + 1 + below]:
                if r.page != row.page:
                    break
                for part in r.parts:
                    if label is not None and not _same_column(label, part):
                        continue
                    v = re.search(value, part.text, flags=re.I)
                    if v:
                        return (v.group(1) if v.groups() else v.group(0)), [row, r], [label, part] if label else [part]
    return None


def _part_at(row: Row, pos: int) -> Part | None:
    at = 0
    for p in row.parts:
        if at <= pos < at + len(p.text) + 1:
            return p
        at += len(p.text) + 1
    return row.parts[-1] if row.parts else None


def _parts_at(row: Row, start: int, end: int) -> list[Part]:
    out, at = [], 0
    for p in row.parts:
        if at < end and start < at + len(p.text):
            out.append(p)
        at += len(p.text) + 1
    return out or list(row.parts)


def _same_column(a: Part, b: Part) -> bool:
    overlap = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
    return overlap > -0.5 * (a.box[3] - a.box[1]) or abs(a.box[0] - b.box[0]) < 2 * (a.box[3] - a.box[1])


def _buyer_parts(rows: list[Row]) -> tuple[set[int], str | None, list[Part]]:
    """ids of the parts in buyer blocks (bill to, client, Kunde, 御中, ...) and the buyer's name."""
    ids: set[int] = set()
    name, name_parts = None, []
    for i, row in enumerate(rows):
        for part in row.parts:
            if re.search(BUYER_SUFFIX, part.text):
                ids.add(id(part))
                if name is None:
                    name, name_parts = re.sub(BUYER_SUFFIX, "", part.text).strip(), [part]
                continue
            m = re.search(BUYER_LABELS, part.text, flags=re.I)
            if not m or m.start() > 3 and not re.match(r"\W", part.text[m.start() - 1]):
                continue
            ids.add(id(part))
            rest = part.text[m.end():].strip(" :：-/")
            block = [part]
            h = part.box[3] - part.box[1]
            bottom = part.box[3]
            for r in rows[i + 1:i + 7]:
                if r.page != row.page or r.box[1] - bottom > 1.5 * h or amounts(r.text):
                    break  # a blank line or a line with an amount ends the block
                col = [p for p in r.parts if _same_column(part, p) and p.box[0] > part.box[0] - 3 * h]
                if not col or any(re.search(SELLER_LABELS + "|" + TOTAL_LABELS[2][1] + "|" + NUMBER_LABELS[0],
                                            p.text, flags=re.I) for p in col):
                    break
                for p in col:
                    ids.add(id(p))
                    block.append(p)
                bottom = max(p.box[3] for p in col)
            if name is None:
                cands = ([(rest, [part])] if len(re.findall(r"[^\W\d_]", rest)) >= 3 else []) + \
                    [(p.text, [p]) for p in block[1:]]
                for text, ps in cands:
                    text = re.sub(r"^(?:(?:guest\s+|customer\s+)?name|nom|nombre|naam|名称)\s*[:：]\s*", "", text,
                                  flags=re.I)
                    if re.fullmatch(r"\W*(?:address|adresse|anschrift|details|information)\W*", text, flags=re.I):
                        continue
                    if len(re.findall(r"[^\W\d_]", text)) >= 3 and not CONTACT.search(text) and \
                            not re.search(r"\d{3,}", text):
                        name, name_parts = text.strip(" :,"), ps
                        break
    return ids, name, name_parts


GENERIC_TITLE = re.compile(r"^(?:tax|sales|simplified|official|commercial|pro\s*-?\s*forma|proforma|payment|cash|"
                           r"credit|debit|final|original|copy|duplicate|kopie|copie|duplicata|e-?|your|the|an?|my|"
                           r"handels|steuer|sammel|teil|schluss|gutschrift|avoir)\W*$", re.I)


def _clean_name(text: str) -> str:
    text = re.sub(r"^(?:name|nom|nombre|naam|firma|raison\s+sociale|名称)\s*[:：]\s*", "", text.strip(), flags=re.I)
    text = re.sub(r"\s*\((?:co\.?\s*(?:reg\.?\s*)?(?:no\.?)?\s*:?\s*)?[\dA-Z][\dA-Z\-]{4,}\)\s*$", "", text)  # (728515-M)
    text = re.sub(r"\s+(?:co\.?\s*)?reg(?:istration)?\.?\s*no\.?\s*:?\s*[\dA-Z\-]+\s*$", "", text, flags=re.I)
    return text.strip(" :,-|")


def _name_like(text: str) -> bool:
    """Could this be a company or person name (not a label, a title, an amount, a contact or a note)?"""
    letters = len(re.findall(r"[^\W\d_]", text))
    digits = len(re.findall(r"\d", text))
    t = text.strip()
    if letters < 3 or digits > letters or CONTACT.search(t) or t.endswith(":") or t.startswith(("(", "[", "*")):
        return False
    if re.fullmatch(r"[A-Z0-9\-/#._]+", t) and re.search(r"\d", t):
        return False  # an identifier (IBZY2087), not a name
    low = t.lower()
    if re.match(r"\W*(?:" + TITLE + r")", low) or re.fullmatch(r"\W*(?:" + TITLE + r")(?:\s+\S+)?\W*", low):
        return False
    if re.search(TITLE, low) and all(GENERIC_TITLE.match(w) or re.fullmatch(TITLE, w)
                                     for w in re.split(r"\s+", re.sub(r"[^\w\s]", " ", low).strip())):
        return False  # "PAYMENT RECEIPT", "Kopie factuur", "Tax Invoice"
    if len(set(re.findall(HEADER_WORDS, low))) >= 2 or re.fullmatch(r"\W*(?:p\.?\s?u\.?|ht|ttc|qty|unit)\W*.*", low):
        return False
    if re.fullmatch(r"\W*\d+(?:[.,]\d+)?\s*(?:x|pcs?|units?|stk\.?|st\.?|kg|g|l|m)\W*", low):
        return False  # a quantity
    if len(t.split()) > 8 and COMPANY.search(t) is None:
        return False  # a sentence, not a name
    label_pats = NUMBER_LABELS + DATE_LABELS + [SUBTOTAL_LABELS, TAX_LABELS, BUYER_LABELS, SELLER_LABELS,
                                                r"\bpage\b|\bseite\b|\bnummer\b|\bnumber\b|\banschrift\b|"
                                                r"\baddress\b|\badresse\b|\bcontact\b|\bkontakt\b"]
    return not any(re.search(pat, t, flags=re.I) for pat in label_pats) or COMPANY.search(t) is not None


def _segments_of(part: Part) -> list[str]:
    """A line split at " - " / " | " separators when its other pieces are an address or contact details
    ("Au bon moulin SARL - 1242 chemin de l'olive - 84340 Malaucène"); else the whole line."""
    segs = [x.strip() for x in re.split(r"\s+[-–|•]\s+", part.text) if x.strip()]
    if len(segs) > 1 and any(STREET.search(x) or CONTACT.search(x) for x in segs[1:]):
        return segs
    return [part.text]


def _vendor(rows: list[Row], buyer_ids: set[int]) -> tuple[str, list[Row], list[Part], float] | None:
    """The issuer: after a seller label, else '<Name> Invoice' in a title, else the most company-like name
    near the top of the first page (a legal suffix, a large font, first in reading order; a name broken
    over two or three lines is joined when its last line ends in the legal form), never a part of the
    buyer's block."""
    first = [r for r in rows if r.page == rows[0].page] if rows else []
    # 1. a seller label: the value beside it ("Name: X" in its block), or the first name-like line of its block
    for i, row in enumerate(rows):
        for k, part in enumerate(row.parts):
            m = re.match(r"\W*(?:" + SELLER_LABELS + r")", part.text, flags=re.I)
            if not m or id(part) in buyer_ids:
                continue
            rest = part.text[m.end():]
            if not re.match(r"\W*(?:sold|issued|billed)\s+by", part.text, flags=re.I) and \
                    not re.match(r"\s*[:：]|\s*$", rest):
                continue  # "From", "Lieferant", "Vendor" are labels only as "From:" or alone
            rest = _clean_name(rest)
            if _name_like(rest):
                return rest, [row], [part], 0.85
            if k + 1 < len(row.parts) and _name_like(_clean_name(row.parts[k + 1].text)):
                return _clean_name(row.parts[k + 1].text), [row], [part, row.parts[k + 1]], 0.85
            for r in rows[i + 1:i + 6]:
                if r.page != row.page:
                    break
                for j, p in enumerate(r.parts):
                    if id(p) in buyer_ids:
                        continue
                    if re.fullmatch(r"\W*(?:name|nom|nombre|naam|firma|名称)\s*[:：]?\W*", p.text, flags=re.I) and \
                            j + 1 < len(r.parts):
                        return _clean_name(r.parts[j + 1].text), [r], [p, r.parts[j + 1]], 0.85
                for p in r.parts:
                    if id(p) in buyer_ids or not _same_column(part, p):
                        continue
                    cand = _clean_name(p.text)
                    if _name_like(cand) and not STREET.search(cand):
                        return cand, [r], [p], 0.8
    # 2. "<Name> Invoice" as a title
    for row in first[:6]:
        m = re.match(r"^\s*(.+?)\s+(?:tax\s+)?(?:invoice|receipt|facture|rechnung|factura)\b", row.text, flags=re.I)
        if m and not any(id(p) in buyer_ids for p in row.parts):
            name = _clean_name(m.group(1))
            if _name_like(name) and not GENERIC_TITLE.match(name):
                return name, [row], _parts_at(row, 0, m.end(1)), 0.8
    # 3. the most company-like name near the top
    if not first:
        return None
    page_top = min(r.box[1] for r in first)
    page_bottom = max(r.box[3] for r in first)
    top_limit = page_top + 0.4 * (page_bottom - page_top)
    heights = sorted(p.box[3] - p.box[1] for r in first for p in r.parts)
    typical = heights[len(heights) // 2] if heights else 1.0
    best = None
    seen = 0
    for k, row in enumerate(first):
        low_on_page = row.box[1] > top_limit and k >= 3
        if low_on_page and best is not None:
            break  # below the top: only when nothing up there was a name (the buyer's block came first)
        if len(row.parts) >= 3 and len(set(re.findall(HEADER_WORDS, row.low))) >= 2:
            continue  # a table header
        if len(row.parts) >= 3 and not amounts(row.text) and all(len(p.text.split()) <= 3 for p in row.parts) and \
                k + 1 < len(first) and len(first[k + 1].parts) >= 2:
            continue  # a row of column labels over their values ("Check In | Check Out | Rooms")
        for part in row.parts:
            if id(part) in buyer_ids:
                continue
            for seg in _segments_of(part):
                windows = [(seg, [row], [part])]
                if not COMPANY.search(seg) and len(row.parts) == 1:
                    # a name broken over lines: join the next one or two when the last holds the legal form
                    text, wrows, wparts = seg, [row], [part]
                    for nxt in first[k + 1:k + 3]:
                        if len(nxt.parts) != 1 or id(nxt.parts[0]) in buyer_ids:
                            break
                        p2 = nxt.parts[0]
                        if abs((p2.box[3] - p2.box[1]) - (part.box[3] - part.box[1])) > 0.35 * (part.box[3] - part.box[1]):
                            break
                        open_paren = text.count("(") > text.count(")")
                        if not (open_paren or len(p2.text.split()) <= 3 or re.search(r"[&\-(,]\s*$", text)):
                            break  # the next line is a name of its own
                        text, wrows, wparts = text + " " + p2.text, wrows + [nxt], wparts + [p2]
                        if COMPANY.search(p2.text):
                            windows.append((text, list(wrows), list(wparts)))
                for text, wrows, wparts in windows:
                    cand = _clean_name(text)
                    if not _name_like(cand) or REGISTRATION.search(cand) and not COMPANY.search(cand):
                        continue
                    if STREET.search(cand) and not COMPANY.search(cand):
                        continue
                    score = 3.0 if COMPANY.search(cand) else 0.0
                    score += min(2.0, max(-0.5, (part.box[3] - part.box[1]) / typical - 1.0)) if typical else 0.0
                    score += 1.0 / (1 + seen) + (0.5 if cand.isupper() else 0.0) - 0.3 * (len(wrows) - 1)
                    score += 0.6 if re.search(r"(?:" + COMPANY_WORDS.pattern + r")\W*$", cand, flags=re.I) else 0.0
                    score += 1.5 if len(_segments_of(part)) > 1 and seg == _segments_of(part)[0] else 0.0  # letterhead
                    score -= 1.0 if cand.count("(") != cand.count(")") else 0.0
                    score -= 1.5 if low_on_page else 0.0
                    if best is None or score > best[0]:
                        best = (score, cand, wrows, wparts)
                seen += 1
    if best is None:
        return None
    score, cand, wrows, wparts = best
    return cand, wrows, wparts, 0.75 if score >= 3 else 0.55


def _address(rows: list[Row], vendor_parts: list[Part], vendor_row: Row | None, vendor_text: str,
             buyer_ids: set[int]) -> tuple[str, list[Row], list[Part]] | None:
    """The issuer's address: the rest of the vendor's line when it holds the address ("Name - 12 rue X -
    75001 Paris"), else the lines under the vendor, in its column, that read like an address (a
    registration number or a date right under the name is skipped)."""
    if not vendor_parts or vendor_row is None:
        return None
    vendor_part = vendor_parts[-1]
    segs = _segments_of(vendor_part)
    if len(segs) > 1:
        rest = [x for x in segs if x and x != vendor_text and not CONTACT.search(x)]
        if rest and any(STREET.search(x) for x in rest):
            return ", ".join(rest), [vendor_row], [vendor_part]
    last_row = next((r for r in rows if vendor_part in r.parts), vendor_row)
    start = rows.index(last_row)
    got: list[Part] = []
    got_rows: list[Row] = []
    bottom = vendor_part.box[3]
    h = vendor_part.box[3] - vendor_part.box[1]
    for r in rows[start + 1:start + 10]:
        if r.page != vendor_row.page:
            break
        col = [p for p in r.parts if _same_column(vendor_part, p) and id(p) not in buyer_ids]
        if not col:
            if got:
                break
            continue
        p = col[0]
        if p.box[1] - bottom > 3.0 * max(h, p.box[3] - p.box[1]):
            break
        text = p.text.strip()
        if (REGISTRATION.search(text) or parse_date(text)) and not STREET.search(text) or \
                re.fullmatch(r"\W*(?:anschrift|adresse|address|direcci[óo]n|住所|地址)\W*", text, flags=re.I):
            if got:
                break
            bottom = p.box[3]
            continue  # a registration number or a date under the name
        if CONTACT.search(text) or any(re.search(x, text, flags=re.I) for x in NUMBER_LABELS + DATE_LABELS) or \
                re.search(BUYER_LABELS + "|" + TITLE, text, flags=re.I) or text.endswith(":"):
            break
        if not re.search(r"[^\W\d_]{2,}", text):
            break
        got.append(p)
        got_rows.append(r)
        bottom = p.box[3]
        if len(got) >= 5:
            break
    if not got or not any(STREET.search(p.text) or re.search(r"\d", p.text) for p in got):
        return None
    return ", ".join(p.text.strip(" ,") for p in got), got_rows, got


def _number_under_header(rows: list[Row], idv: str) -> tuple[str, list[Row], list[Part]] | None:
    """An invoice number under a column header that names it ("Factuur", "Invoice #", "Rechnung Nr.") in a
    row of headers, read from the part below with the most overlap."""
    head = re.compile(r"\W*(?:invoice|inv|facture|factuur|rechnung|factura|receipt|bill)\s*(?:no\.?|nr\.?|number|"
                      r"nummer|n[°ºo]\.?|#|num[ée]ro)?\W*", re.I)
    for i, row in enumerate(rows[:-1]):
        if len(row.parts) < 2 or amounts(row.text):
            continue
        for part in row.parts:
            if not head.fullmatch(part.text):
                continue
            nxt = rows[i + 1]
            if nxt.page != row.page:
                continue
            below = max(nxt.parts, key=lambda p: _overlap(part.box, p.box))
            if _overlap(part.box, below.box) <= 0:
                continue
            v = re.search(idv, below.text, flags=re.I)
            if v and not parse_date(v.group(1)):
                return v.group(1), [row, nxt], [part, below]
    return None


def _number_by_shape(rows: list[Row], buyer_ids: set[int]) -> tuple[str, list[Row], list[Part]] | None:
    """An invoice number with no label, by its shape (letters and digits, or six or more digits, not a
    date, phone, amount, postcode or tax id) in the top third of the first page."""
    first = [r for r in rows if r.page == rows[0].page] if rows else []
    if not first:
        return None
    top, bottom = min(r.box[1] for r in first), max(r.box[3] for r in first)
    for row in first:
        if row.box[1] > top + 0.33 * (bottom - top):
            break
        if re.search(NOT_NUMBER, row.low) or CONTACT.search(row.text):
            continue
        for part in row.parts:
            if id(part) in buyer_ids or REGISTRATION.search(part.text) and not re.search(TITLE, part.text.lower()):
                continue
            for m in re.finditer(r"(?<![\w/.\-])([A-Z]{0,5}[-/#]?\d[\dA-Z\-/]{4,}|\d{6,})(?![\w/.\-])", part.text):
                tok = m.group(1)
                if parse_date(tok) or amounts(tok) or len(re.sub(r"\D", "", tok)) < 4 or len(tok) > 24:
                    continue
                return tok.lstrip("#"), [row], [part]
    return None


def extract_fields(result: OcrResult | list[OcrLine], month_first: bool | None = None) -> InvoiceFields:
    """Invoice/receipt fields of a result (all pages) or of one page's lines, each with its evidence
    (`fields.evidence[name]`), with checks and flags on what does not add up."""
    rows = rows_of(result)
    f = InvoiceFields()
    if not rows:
        return f
    low = "\n".join(r.low for r in rows)
    buyer_ids, buyer, buyer_parts = _buyer_parts(rows)
    if buyer:
        f.buyer = buyer
        f.evidence["buyer"] = evidence([next(r for r in rows if any(p in r.parts for p in buyer_parts))],
                                       buyer_parts, 0.7)

    # invoice number: a label, a title with a number, a weak "No." label, else its shape near the top
    idv = r"(#?\s?[A-Z0-9][A-Z0-9_\-/.]*\d[A-Z0-9_\-/]*|#?\s?[A-Z0-9]*\d[A-Z0-9_\-/]{2,})"
    found = _label_value(rows, NUMBER_LABELS, idv, exclude=None, below=2)
    weight = 0.9
    if found is None:
        found = _number_under_header(rows, idv)
        weight = 0.85
    if found is None:
        found = _label_value(rows, [TITLE_NUMBER], idv, exclude=NOT_NUMBER)
        weight = 0.8
    if found is None:
        found = _label_value(rows, [WEAK_NUMBER_LABEL], idv, exclude=NOT_NUMBER, below=0)
        weight = 0.6
    if found is None:
        found = _number_by_shape(rows, buyer_ids)
        weight = 0.5
    if found is not None:
        value, ev_rows, ev_parts = found
        value = value.replace(" ", "").strip(".:")
        if not parse_date(value) and len(value) >= 3:
            f.invoice_number = value
            f.evidence["invoice_number"] = evidence(ev_rows, ev_parts, weight)

    # date: an invoice-date label, then a date label (not due / delivery / order), then the first date
    mf = month_first if month_first is not None else _month_first(low)
    for level, weight in ((0, 0.9), (1, 0.8), (None, 0.5)):
        hit = None
        for i, row in enumerate(rows):
            if level is not None:
                m = re.search(DATE_LABELS[level], row.text, flags=re.I)
                if not m or re.search(NOT_DATE, row.low[max(0, m.start() - 12):m.end() + 4]):
                    continue
                got = parse_date(row.text[m.end():], mf)
                if got:
                    hit = (got, [row], _parts_at(row, m.start(), len(row.text)))
                elif i + 1 < len(rows) and rows[i + 1].page == row.page:
                    label = _part_at(row, m.start())
                    for p in rows[i + 1].parts:
                        if label is None or _same_column(label, p):
                            got = parse_date(p.text, mf)
                            if got:
                                hit = (got, [row, rows[i + 1]], [label, p] if label else [p])
                                break
            else:
                if re.search(NOT_DATE, row.low):
                    continue
                got = parse_date(row.text, mf)
                if got:
                    hit = (got, [row], [])
            if hit:
                break
        if hit:
            f.date = hit[0]
            f.evidence["date"] = evidence(hit[1], hit[2] or None, weight)
            break

    # money: every labelled slot of every row (a label and the amounts after it, up to the next label)
    slots = _money_slots(rows)
    money = _choose_money(slots, rows)
    total_ev = None
    for key in ("subtotal", "tax", "total"):
        got = money.get(key)
        if got is None:
            continue
        value, slot_rows, slot_parts, weight = got
        setattr(f, key, value)
        if slot_rows:
            f.evidence[key] = evidence(slot_rows, slot_parts, weight)
        else:
            f.evidence[key] = FieldEvidence("subtotal + tax", f.evidence["subtotal"].page, [], [], weight)
        if key == "total":
            total_ev = slot_rows
    if money.get("rounded"):
        f.checks["total_after_rounding"] = True
    if "total" in money and not money["total"][1]:
        f.flags.append("no total line was found: the total is the subtotal plus the tax")
    first_money_row = min((s.row for s in slots if s.amount is not None and s.kind in ("subtotal", "tax", "total")),
                          default=None)

    # currency: the one written by the total, else the most frequent
    near = " ".join(r.low for r in (total_ev or []))
    f.currency = _currency(low, near)
    if f.currency:
        ev_row = next((r for r in (total_ev or []) if _currency(r.low)), None) or \
            next((r for r in rows if _currency(r.low) == f.currency), None)
        if ev_row is not None:
            f.evidence["currency"] = evidence([ev_row], None, 0.8)

    # tax id
    tid = _label_value(rows, [r"\b(?:vat\s*/?\s*tin|gstin|gst\s*(?:reg\w*\s*)?(?:no|id)|vat\s*(?:no|number|reg\w*|id)|"
                              r"tax\s*id|tin|ein|abn|ust[\s.-]*id[\s.-]*nr|ust-?idnr|usi?t?-?id|n°\s*tva|tva\s*intra\w*|"
                              r"tva|siret|nif|cif|税号|纳税人识别号|登録番号)\b\.?\s*[:#]?"],
                       r"([A-Z]{0,3}[\s]?[A-Z0-9][A-Z0-9\-]{6,}[A-Z0-9])", below=1)
    if tid:
        f.tax_id = tid[0].replace(" ", "").strip()
        f.evidence["tax_id"] = evidence(tid[1], tid[2], 0.85)

    # vendor and address
    ven = _vendor(rows, buyer_ids)
    if ven is not None:
        name, ev_rows, ev_parts, weight = ven
        f.vendor = name
        f.evidence["vendor"] = evidence(ev_rows, ev_parts, weight)
        addr = _address(rows, ev_parts, ev_rows[0], name, buyer_ids)
        if addr is not None:
            f.address = addr[0]
            f.evidence["address"] = evidence(addr[1], addr[2], 0.7)

    # line items: rows with an amount and a description, after a table header when there is one, before
    # the first totals row
    start = 0
    for i, row in enumerate(rows):
        if len(set(re.findall(HEADER_WORDS, row.low))) >= 2 and not amounts(row.text):
            start = i + 1
            break
    end = first_money_row if first_money_row is not None and first_money_row > start else len(rows)
    for i in range(start, end):
        row = rows[i]
        found_amts = amounts(row.text)
        if not found_amts or ITEM_STOP.search(row.text) or any(id(p) in buyer_ids for p in row.parts):
            continue
        desc = row.text[:found_amts[0][1]]
        desc = re.sub(r"\s+\d+(?:[.,]\d+)?\s*(?:x|pcs?|units?|unit\(s\)|liter\(s\)|stk\.?|st\.?)?\s*$", " ", desc,
                      flags=re.I)
        desc = re.sub(r"[$€£¥₹]|\b(?:rs|rm)\.?\s*$", " ", desc, flags=re.I)
        desc = " ".join(desc.split()).strip(" :-|*")
        if len(re.findall(r"[^\W\d_]", desc)) < 3:
            continue
        qty = re.search(r"(?:^|\s)(\d{1,4}(?:[.,]\d{1,3})?)\s*(?:x|pcs?|units?|unit\(s\)|liter\(s\)|stk\.?|st\.?)?\s*$",
                        row.text[:found_amts[0][1]], flags=re.I)
        unit = found_amts[-2][0] if len(found_amts) >= 2 else None
        item = LineItem(desc, found_amts[-1][0], _number(qty.group(1)) if qty else None, unit)
        f.evidence[f"line_items[{len(f.line_items)}]"] = evidence([row], None, 0.7)
        f.line_items.append(item)

    check(f, low)
    return f


CHECK_FLAGS = ("a date label was found", "subtotal ", "line items ")


def check(f: InvoiceFields, text: str, adjust: str | None = None) -> InvoiceFields:
    """Run the checks on the fields (again): a valid date when the text has a date label, subtotal + tax =
    total, line items (+ tax) = total. Their flags are replaced; the confidence of the amounts goes up
    when they add up and down when they do not (only for evidence from `adjust`, "rules" or "model", when
    given: a second run leaves the first one's figures alone)."""
    low = text.lower()
    f.flags = [x for x in f.flags if not x.startswith(CHECK_FLAGS)]
    for key in ("date_valid", "subtotal_plus_tax_equals_total", "line_items_plus_tax_equal_total"):
        f.checks.pop(key, None)
    if f.date is not None:
        f.checks["date_valid"] = True
    elif re.search(r"\bdate\b|datum|fecha|日期|日付", low):
        f.checks["date_valid"] = False
        f.flags.append("a date label was found but no valid date could be read")
    tol = lambda a: max(0.02, 0.01 * abs(a))  # noqa: E731
    if f.total is not None and f.subtotal is not None and ("total" not in f.evidence or f.evidence["total"].lines or
                                                           f.evidence["total"].source == "model"):
        ok = abs(f.subtotal + (f.tax or 0.0) - f.total) <= tol(f.total)
        f.checks["subtotal_plus_tax_equals_total"] = ok
        for key in ("subtotal", "tax", "total"):
            if key in f.evidence and adjust in (None, f.evidence[key].source):
                ev = f.evidence[key]
                ev.confidence = round(min(1.0, ev.confidence + 0.1) if ok else ev.confidence * 0.7, 3)
        if not ok:
            f.flags.append(f"subtotal {f.subtotal:.2f} + tax {f.tax or 0:.2f} does not equal total {f.total:.2f}")
    if f.total is not None and f.line_items:
        items = sum(li.amount or 0.0 for li in f.line_items)
        ok = any(abs(items + extra - f.total) <= tol(f.total) for extra in (0.0, f.tax or 0.0))
        f.checks["line_items_plus_tax_equal_total"] = ok
        if not ok:
            f.flags.append(f"line items {items:.2f} + tax {f.tax or 0:.2f} do not add up to total {f.total:.2f}")
    return f
