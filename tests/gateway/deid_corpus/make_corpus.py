"""Write corpus.jsonl: synthetic English and Chinese clinical notes with exact span labels.

    python -m tests.gateway.deid_corpus.make_corpus      (from the repository root)

Deterministic (fixed seed): the committed corpus.jsonl is what this script writes. Every value is
synthetic (555-01xx telephone numbers, example.* domains, generated check digits); names come
from this file's own pools, about a quarter of which are not in the de-identifier's dictionaries,
so that the figures measure the context rules too and not only dictionary look-up.

Each line: {"id", "lang", "text", "spans": [{"start", "end", "type"}]}. Text that is not in a
span is not an identifier; the templates put hard negatives there on purpose (doses, lab values,
blood pressures, years alone, room numbers, ages under 90, 身份证号 with a wrong check character,
card numbers that fail Luhn).
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from apps.gateway.deid.checksums import cn_id_check_char, luhn_ok, vin_ok
from apps.gateway.deid.spans import (
    ACCOUNT,
    AGE,
    BANK_CARD,
    CN_ID,
    CN_MOBILE,
    DATE,
    DEVICE,
    EMAIL,
    FAX,
    HEALTH_PLAN,
    IP,
    LICENSE,
    MRN,
    NAME,
    PHONE,
    SSN,
    URL,
    VEHICLE,
    ZIP,
)

OUT = Path(__file__).with_name("corpus.jsonl")
SEED = 20240305
N_EN, N_ZH = 170, 110

GIVEN = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "Michael",
    "Linda",
    "William",
    "Barbara",
    "David",
    "Susan",
    "Richard",
    "Jessica",
    "Joseph",
    "Sarah",
    "Thomas",
    "Karen",
    "Charles",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Margaret",
    "Anthony",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Dorothy",
    "Paul",
    "Kimberly",
    "Andrew",
    "Emily",
    "Joshua",
    "Donna",
    "Kenneth",
    "Michelle",
    "Kevin",
    "Carol",
    "Brian",
    "Amanda",
    "George",
    "Melissa",
    "Edward",
    "Deborah",
    "Ronald",
    "Stephanie",
    "Maria",
    "Jose",
    "Luis",
    "Carmen",
    "Ahmed",
    "Priya",
    "Wei",
    "Mohammed",
    "Olga",
    "Giovanni",
    "Fatima",
    "Hiroshi",
    "Mildred",
    "Harold",
    "Eleanor",
    "Walter",
]
GIVEN_RARE = [
    "Thaddeus",
    "Ignatius",
    "Perpetua",
    "Leopoldo",
    "Anastasia",
    "Bartholomew",
    "Eustace",
    "Ottoline",
    "Cosimo",
    "Ines",
    "Soren",
    "Anneliese",
    "Ezekiel",
    "Rosalind",
    "Cornelius",
    "Imogen",
    "Lorcan",
    "Niamh",
    "Siobhan",
    "Tadhg",
    "Yusuf",
    "Nkechi",
    "Adaeze",
    "Thandiwe",
    "Kiran",
    "Arjun",
    "Hamid",
    "Leila",
    "Dariusz",
    "Zofia",
]
FAMILY = [
    "Smith",
    "Johnson",
    "Williams",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Thompson",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Patel",
    "Chen",
    "Wang",
    "Kim",
    "Singh",
    "Murphy",
    "Cohen",
    "Okafor",
    "Tanaka",
    "Schmidt",
    "Rossi",
    "Kowalski",
    "Sullivan",
    "Brennan",
    "Fischer",
]
FAMILY_RARE = [
    "Przybylski",
    "Okonkwo",
    "Vanterpool",
    "Hargreaves",
    "Abernathy",
    "Fitzwilliam",
    "Oyelaran",
    "Castellanos",
    "Wojcik",
    "Lindqvist",
    "Takahashi",
    "Mwangi",
    "Achterberg",
    "Quintero",
    "Delacroix",
    "Szabo",
    "Novakovic",
    "Brannigan",
    "Kowalczyk",
    "Ravenscroft",
]
ZH_SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严欧莫孔向常汤康易乔"
) + [
    "欧阳",
    "司马",
    "诸葛",
    "上官",
]
ZH_GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍鹏辉玲建国红梅志文斌宇浩凯晨欣怡子涵雨轩思")
ZH_GIVEN_RARE = list("翊赟旻珺昶彧淼垚犇骞湉祎玥琰")
CITIES = [("Springfield", "IL"), ("Boston", "MA"), ("Austin", "TX"), ("Madison", "WI"), ("Portland", "OR")]
CITIES += [("Columbus", "OH"), ("Denver", "CO"), ("Raleigh", "NC"), ("Tucson", "AZ"), ("Albany", "NY")]
STATE_NAMES = ["Massachusetts", "Ohio", "California", "New York", "Texas", "Georgia", "Virginia"]
AREA = ["212", "312", "415", "617", "713", "206", "305", "404", "602", "503", "919", "720"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "hospital.example.org", "example.edu"]
ZH_DOMAINS = ["example.cn", "mail.example.com.cn", "example.com"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
CN_REGIONS = ["110101", "310104", "440305", "330106", "510107", "420106", "320102", "370102", "210102", "500103"]
CN_PROVINCES = "京沪粤浙苏川鄂鲁辽渝津湘"
CONDITIONS = [
    "type 2 diabetes",
    "hypertension",
    "COPD",
    "atrial fibrillation",
    "CKD stage 3",
    "heart failure with reduced ejection fraction",
    "osteoarthritis",
    "hypothyroidism",
]
ZH_CONDITIONS = ["高血压", "2型糖尿病", "冠心病", "慢性阻塞性肺疾病", "房颤", "慢性肾病3期", "脑梗死后遗症"]


class Note:
    """Text built piece by piece; labelled pieces record their span."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[dict] = []

    def add(self, text: str, kind: str | None = None) -> None:
        if kind:
            self.spans.append({"start": self.length, "end": self.length + len(text), "type": kind})
        self.parts.append(text)
        self.length += len(text)

    def fill(self, template: str, fields: dict) -> None:
        for literal, name, _, _ in string.Formatter().parse(template):
            if literal:
                self.add(literal)
            if name is not None:
                value = fields[name]
                kind, text = value() if callable(value) else value
                self.add(text, kind)


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def pick(self, seq):
        return self.r.choice(seq)

    # --- names
    def en_person(self) -> tuple[str, str]:
        given = self.pick(GIVEN_RARE) if self.r.random() < 0.25 else self.pick(GIVEN)
        family = self.pick(FAMILY_RARE) if self.r.random() < 0.25 else self.pick(FAMILY)
        return given, family

    def zh_name(self) -> str:
        pool = ZH_GIVEN_RARE if self.r.random() < 0.2 else ZH_GIVEN
        return self.pick(ZH_SURNAMES) + "".join(self.pick(pool) for _ in range(self.r.choice((1, 2, 2))))

    # --- dates
    def ymd(self, lo=1925, hi=2025) -> tuple[int, int, int]:
        return self.r.randint(lo, hi), self.r.randint(1, 12), self.r.randint(1, 28)

    def en_date(self, lo=1925, hi=2025) -> str:
        y, m, d = self.ymd(lo, hi)
        mon = MONTHS[m - 1]
        suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(d, "th")
        return self.pick(
            [
                f"{m:02d}/{d:02d}/{y}",
                f"{m}/{d}/{y}",
                f"{m}/{d}/{y % 100:02d}",
                f"{y}-{m:02d}-{d:02d}",
                f"{mon} {d}, {y}",
                f"{mon[:3]} {d}, {y}",
                f"{mon[:3]}. {d} {y}",
                f"{d} {mon} {y}",
                f"{d}{suffix} of {mon} {y}",
                f"{m:02d}-{d:02d}-{y}",
                f"{d:02d}.{m:02d}.{y}",
                f"{mon} {d}{suffix}",
            ]
        )

    def zh_date(self, lo=1925, hi=2025) -> str:
        y, m, d = self.ymd(lo, hi)
        cn = "〇一二三四五六七八九"
        tens = lambda n: ("" if n < 20 else cn[n // 10]) + ("十" if n >= 10 else "") + (cn[n % 10] if n % 10 else "")  # noqa: E731
        return self.pick(
            [
                f"{y}年{m}月{d}日",
                f"{y}年{m:02d}月{d:02d}日",
                f"{y}-{m:02d}-{d:02d}",
                f"{y}/{m}/{d}",
                f"{m}月{d}日",
                f"{y}年{m}月",
                "".join(cn[int(c)] for c in str(y)) + f"年{tens(m)}月{tens(d)}日",
            ]
        )

    # --- telephones
    def us_phone(self) -> str:
        a, line = self.pick(AREA), f"01{self.digits(2)}"
        return self.pick(
            [
                f"({a}) 555-{line}",
                f"{a}-555-{line}",
                f"{a}.555.{line}",
                f"+1 {a} 555 {line}",
                f"1-{a}-555-{line}",
                f"{a}-555-{line} ext. {self.r.randint(2, 999)}",
                f"+44 20 7946 {self.digits(4)}",
            ]
        )

    def cn_landline(self) -> str:
        area = self.pick(["010", "021", "020", "0755", "0571", "028"])
        n = self.digits(8) if len(area) == 3 else self.digits(7 + self.r.randint(0, 1))
        return self.pick([f"{area}-{n}", f"({area}) {n[:4]} {n[4:]}", f"{area}-{n[:4]}-{n[4:]}"])

    def cn_mobile(self) -> str:
        n = self.pick(["13", "15", "17", "18", "19"]) + str(self.r.randint(0, 9)) + self.digits(8)
        s = self.pick([n, f"{n[:3]} {n[3:7]} {n[7:]}", f"{n[:3]}-{n[3:7]}-{n[7:]}", f"+86 {n}", f"+86-{n}"])
        if self.r.random() < 0.15:  # full-width digits, as typed with a Chinese IME
            s = s.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789+-"})
        return s

    # --- identifiers with check digits
    def cn_id(self, valid=True) -> str:
        y, m, d = self.ymd(1930, 2006)
        first = f"{self.pick(CN_REGIONS)}{y}{m:02d}{d:02d}{self.digits(3)}"
        check = cn_id_check_char(first)
        if not valid:
            check = self.pick([c for c in "0123456789X" if c != check])
        return first + check

    def luhn_complete(self, stem: str) -> str:
        return stem + next(d for d in "0123456789" if luhn_ok(stem + d))

    def card(self, valid=True) -> str:
        kind = self.r.random()
        if kind < 0.5:
            n = self.luhn_complete("62" + self.digits(self.pick([13, 16])))
        elif kind < 0.8:
            n = self.luhn_complete("4" + self.digits(14))
        else:
            n = self.luhn_complete(str(self.r.randint(51, 55)) + self.digits(13))
        if not valid:
            n = n[:-1] + str((int(n[-1]) + self.r.randint(1, 9)) % 10)
        return self.pick([n, " ".join(n[i : i + 4] for i in range(0, len(n), 4))])

    def vin(self) -> str:
        alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        while True:
            body = "".join(self.pick(alphabet) for _ in range(17))
            for c in "0123456789X":
                v = body[:8] + c + body[9:]
                if vin_ok(v):
                    return v

    def dea(self) -> str:
        d = [self.r.randint(0, 9) for _ in range(6)]
        check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
        return self.pick("ABFM") + self.pick(string.ascii_uppercase) + "".join(map(str, d)) + str(check)

    def npi(self) -> str:
        body = "1" + self.digits(8)
        check = next(c for c in "0123456789" if luhn_ok("80840" + body + c))
        return body + check

    def imei(self) -> str:
        return self.luhn_complete("35" + self.digits(12))

    def ssn(self) -> str:
        a, g, s = f"{self.r.randint(1, 665):03d}", f"{self.r.randint(1, 99):02d}", f"{self.r.randint(1, 9999):04d}"
        return self.pick([f"{a}-{g}-{s}", f"{a}-{g}-{s}", f"{a} {g} {s}"])

    # --- record numbers and codes
    def mrn(self) -> str:
        return self.pick(
            [self.digits(8), f"{self.digits(4)}-{self.digits(3)}", f"A{self.digits(8)}", f"MR{self.digits(7)}"]
        )

    def zh_mrn(self) -> str:
        return self.pick([f"A{self.r.randint(2015, 2025)}-{self.digits(5)}", self.digits(10), f"MZ{self.digits(8)}"])

    def health_plan(self) -> str:
        letters = lambda n: "".join(self.pick("ACDEFGHJKMNPQRTUVWXY") for _ in range(n))  # noqa: E731
        return self.pick(
            [
                f"{letters(3)}{self.digits(9)}",
                f"{self.digits(1)}{letters(2)}{self.digits(1)}-{letters(2)}{self.digits(1)}-{letters(2)}{self.digits(2)}",
                f"W{self.digits(9)}",
                f"{self.digits(8)}-0{self.r.randint(1, 4)}",
                f"HZ{self.r.randint(2015, 2025)}-{self.digits(5)}",
            ]
        )

    def account(self) -> str:
        return self.pick(
            [self.digits(8), f"{self.digits(4)}-{self.digits(4)}", f"BA-{self.digits(7)}", self.digits(10)]
        )

    def license(self) -> str:
        return self.pick(
            [
                f"{self.pick(['MD', 'RN', 'PA'])}-{self.digits(5)}",
                f"D{self.digits(3)}-{self.digits(4)}-{self.digits(4)}",
            ]
        )

    def serial(self) -> str:
        return self.pick(
            [
                f"PX{self.digits(4)}-{self.digits(4)}",
                f"{self.digits(1)}C{self.digits(1)}-{self.digits(5)}",
                f"SN{self.digits(8)}",
                f"{self.pick(string.ascii_uppercase)}{self.digits(9)}",
            ]
        )

    def mac(self) -> str:
        sep = self.pick(":-")
        return sep.join(f"{self.r.randint(0, 255):02X}" for _ in range(6))

    def us_plate(self) -> str:
        letters = "".join(self.pick("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
        return self.pick([f"{self.r.randint(1, 9)}{letters}{self.digits(3)}", f"{letters}-{self.digits(4)}"])

    def cn_plate(self) -> str:
        p, letter = self.pick(CN_PROVINCES), self.pick("ABCDEFGHJK")
        tail = "".join(self.pick("0123456789ABCDEFGHJK") for _ in range(4)) + self.digits(1)
        return self.pick([f"{p}{letter}{tail}", f"{p}{letter}·{tail}", f"{p}{letter}D{self.digits(5)}"])

    def url(self, zh=False) -> str:
        host = self.pick(["portal.example-health.org", "www.example.com", "mychart.example.org", "example.cn"])
        path = self.pick(["", f"/patients/{self.digits(5)}", f"/records?id={self.digits(6)}", "/visit/summary"])
        return self.pick(
            [f"https://{host}{path}", f"http://{host}{path}", f"{host}{path}" if "www" in host else f"https://{host}"]
        )

    def ip(self) -> str:
        if self.r.random() < 0.65:
            return self.pick(
                [
                    f"10.{self.r.randint(0, 255)}.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}",
                    f"192.168.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}",
                    f"172.{self.r.randint(16, 31)}.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}",
                    f"203.0.113.{self.r.randint(1, 254)}",
                ]
            )
        h = lambda: f"{self.r.randint(1, 0xFFFF):x}"  # noqa: E731
        return self.pick([f"2001:db8:{h()}:{h()}::{h()}", f"fe80::{h()}:{h()}:{h()}:{h()}", f"2001:db8::{h()}"])

    def email(self, given: str, family: str, zh=False) -> str:
        if zh:
            user = self.pick(["zhang.wei", "liming88", "wangfang", "chen_jie", "lihua.2020"]) + self.digits(2)
        else:
            user = self.pick([f"{given}.{family}", f"{given[0]}{family}", f"{family}{self.digits(2)}"]).lower()
        return f"{user}@{self.pick(ZH_DOMAINS if zh else DOMAINS)}"

    def zip(self) -> str:
        return self.pick([self.digits(5), f"{self.digits(5)}-{self.digits(4)}"])


# ---- English notes ----------------------------------------------------------------------------

EN_HEADER = [
    "Patient: {pfull}\n",
    "Patient Name: {plastfirst}\n",
    "Name: {pfull}\n",
    "DOB: {dob}\n",
    "Date of birth: {dob}\n",
    "MRN: {mrn}\n",
    "Medical record number: {mrn}\n",
    "MR# {mrn}\n",
    "Admission date: {date}\n",
    "Date of service: {date}\n",
    "Attending: Dr. {dlast}\n",
    "Attending physician: {dfull}, MD\n",
    "Address: {street}, {city}, {state} {zip}\n",
    "Home: {city}, {statename} {zip}\n",
    "Phone: {phone}\n",
    "Cell: {phone}\n",
    "Home phone {phone}\n",
    "Fax: {fax}\n",
    "Referring office fax {fax}\n",
    "Email: {email}\n",
    "Insurance: Blue Cross PPO, member ID {hp}\n",
    "Medicare beneficiary identifier: {hp}\n",
    "Policy number: {hp}\n",
    "SSN: {ssn}\n",
    "Account #: {acct}\n",
    "Billing account {acct}\n",
    "Emergency contact: {cfull} ({rel}), {phone}\n",
    "Zip code: {zip}\n",
]
EN_BODY = [
    "{pfirst} is a {age_old}-year-old {sex} with a history of {cond} who presents with worsening dyspnea. ",
    "{ptitle} {plast} is a {age_young}-year-old {sex} with {cond}, seen today for follow-up. ",
    "Patient is {age_old} years old and lives alone. ",
    "{pfull}, aged {age_old}, was brought in by EMS. ",
    "{age_old} y/o {sex} with {cond} and falls. ",
    "{ptitle} {plast} was admitted on {date} after a fall at home. ",
    "Seen in clinic on {date} by Dr. {dlast}; plan discussed with {pfirst}. ",
    "Last colonoscopy {date_my}, normal. ",
    "His daughter, {cfull}, can be reached at {phone}. ",
    "Spoke with her son {cfirst} by phone at {phone} and updated him on the plan. ",
    "Discussed with Dr. {dfull} from cardiology, who agrees with the plan. ",
    "{pfirst} tolerated the procedure well and was discharged on {date}. ",
    "Labs on {date}: Hb 11.2 g/dL, WBC 7.4, Cr 1.3 mg/dL, Na 138, K 4.1. ",
    "Started metformin 500 mg twice daily; continue lisinopril 10 mg daily and atorvastatin 40 mg at night. ",
    "BP 132/84, HR 76, RR 16, SpO2 96% on room air, temp 37.1 C, weight 72 kg. ",
    "Diagnosed with {cond} in 2019; smoked 20 pack-years, quit in 2008. ",
    "Room 412, bed 2. Follow up in 2-3 weeks; repeat BMP in 7 days. ",
    "ICD-10 E11.9, CPT 99213. Pain 3/10, strength 5/5 in all extremities. ",
    "Take 1/2 tablet of metoprolol 25 mg if HR above 100; walk 10000 steps a day. ",
    "Pacemaker in place (serial number {serial}), interrogated {date}. ",
    "Insulin pump S/N: {serial}, reservoir changed every 3 days. ",
    "Glucose meter device ID {serial} synced from IP {ip}. ",
    "Home monitoring hub MAC address {mac}, last upload from {ip}. ",
    "CGM phone app IMEI {imei}. ",
    "Involved vehicle VIN {vin}, license plate {plate}. ",
    "Motor vehicle collision; car with plate {plate} towed. ",
    "Results were posted to the patient portal at {url}. ",
    "Education materials: {url} ",
    "Prescriber DEA {dea}, NPI {npi}. ",
    "Driver's license {lic} verified at registration. ",
    "Nurse license {lic} on file. ",
    "Copay charged to card {card}. ",
    "Card on file {badcard} was declined (invalid number). ",
    "Social security number {ssn} confirmed with the patient. ",
    "Questions may be sent to {email} or faxed to {fax}. ",
    "Subscriber ID {hp} verified with the plan. ",
    "Invoice for encounter billed to account number {acct}. ",
    "Mother died at 78 of stroke; father, 81, has Parkinson disease. ",
    "Grandmother {cfirst} {clast} lived to {age_old}. ",
    "Seen by Mrs. {clast} from social work on {date_md}. ",
    "Next visit scheduled for {date}. ",
]
EN_FOOTER = [
    "\nElectronically signed by {dfull}, MD on {date} 14:32.",
    "\nSigned: Dr. {dfull}\nDate: {date}",
    "\nDictated by {dfull}, NP. cc: {cfull}.",
    "\n-- {dfull}, RN",
]
STREETS = ["42 Elm Street", "1187 Oak Avenue, Apt 3B", "9 Harbor Road", "250 Maple Drive", "77 Pine Lane"]
RELATIONS = ["daughter", "son", "wife", "husband", "sister", "brother", "friend"]


def en_fields(g: Gen) -> dict:
    pg, pf = g.en_person()
    cg, cf = g.en_person()
    dg, df = g.en_person()
    sex = g.pick(["male", "female"])
    city, state = g.pick(CITIES)
    return {
        "pfull": (NAME, f"{pg} {pf}"),
        "plastfirst": (NAME, f"{pf}, {pg}"),
        "pfirst": (NAME, pg),
        "plast": (NAME, pf),
        "ptitle": (None, "Mr." if sex == "male" else g.pick(["Mrs.", "Ms."])),
        "sex": (None, sex),
        "cfull": (NAME, f"{cg} {cf}"),
        "cfirst": (NAME, cg),
        "clast": (NAME, cf),
        "dfull": (NAME, f"{dg} {df}"),
        "dlast": (NAME, df),
        "rel": (None, g.pick(RELATIONS)),
        "dob": lambda: (DATE, g.en_date(1925, 2005)),
        "date": lambda: (DATE, g.en_date(2015, 2025)),
        "date_my": lambda: (DATE, f"{g.pick(MONTHS)} {g.r.randint(2010, 2025)}"),
        "date_md": lambda: (DATE, f"{g.r.randint(1, 12)}/{g.r.randint(1, 28)}"),
        "age_old": lambda: (AGE, str(g.r.randint(90, 104))),
        "age_young": (None, str(g.r.randint(19, 89))),
        "cond": (None, g.pick(CONDITIONS)),
        "street": (None, g.pick(STREETS)),
        "city": (None, city),
        "state": (None, state),
        "statename": (None, g.pick(STATE_NAMES)),
        "zip": lambda: (ZIP, g.zip()),
        "phone": lambda: (PHONE, g.us_phone()),
        "fax": lambda: (FAX, g.us_phone()),
        "email": (EMAIL, g.email(pg, pf)),
        "mrn": (MRN, g.mrn()),
        "hp": (HEALTH_PLAN, g.health_plan()),
        "ssn": (SSN, g.ssn()),
        "acct": (ACCOUNT, g.account()),
        "serial": lambda: (DEVICE, g.serial()),
        "mac": lambda: (DEVICE, g.mac()),
        "imei": lambda: (DEVICE, g.imei()),
        "ip": lambda: (IP, g.ip()),
        "vin": lambda: (VEHICLE, g.vin()),
        "plate": lambda: (VEHICLE, g.us_plate()),
        "url": lambda: (URL, g.url()),
        "dea": lambda: (LICENSE, g.dea()),
        "npi": lambda: (LICENSE, g.npi()),
        "lic": lambda: (LICENSE, g.license()),
        "card": lambda: (BANK_CARD, g.card()),
        "badcard": lambda: (None, g.card(valid=False)),
    }


def en_note(g: Gen) -> Note:
    note, fields = Note(), en_fields(g)
    for line in g.r.sample(EN_HEADER, g.r.randint(4, 8)):
        note.fill(line, fields)
    note.add("\n")
    for sentence in g.r.sample(EN_BODY, g.r.randint(5, 9)):
        note.fill(sentence, fields)
    note.fill(g.pick(EN_FOOTER), fields)
    return note


# ---- Chinese notes ----------------------------------------------------------------------------

ZH_HEADER = [
    "姓名：{pname}  性别：{sex}  年龄：{age_any}岁\n",
    "患者姓名：{pname}\n",
    "身份证号：{cnid}\n",
    "身份证号码 {cnid}\n",
    "联系电话：{mobile}\n",
    "手机：{mobile}\n",
    "家属电话 {mobile}\n",
    "科室电话：{landline}\n",
    "传真：{fax}\n",
    "病历号：{mrn}\n",
    "住院号：{mrn}\n",
    "入院日期：{date}\n",
    "出生日期：{dob}\n",
    "医保卡号：{hp}\n",
    "银行卡号：{card}\n",
    "住址：北京市朝阳区建国路88号，邮编：{zip}\n",
    "电子邮箱：{email}\n",
    "紧急联系人：{cname}（{rel}），{mobile}\n",
]
ZH_BODY = [
    "主诉：反复胸闷气短3年，加重2天。",
    "现病史：患者{pname}于{date}无明显诱因出现胸痛，持续约30分钟，自服硝酸甘油0.5 mg后缓解。",
    "患者{pname}，{sex}，{age_old}岁，因“{cond}”入院。",
    "既往史：{cond}病史10年，规律服用阿司匹林100 mg qd、阿托伐他汀20 mg qn。",
    "查体：T 36.8℃，P 82次/分，R 20次/分，BP 135/85 mmHg，SpO2 97%。",
    "辅助检查：血红蛋白 112 g/L，白细胞 6.5×10^9/L，血小板 210×10^9/L，肌酐 88 μmol/L。",
    "{dsur}主任查房后指示：继续抗血小板治疗，{date}复查心电图。",
    "由{dname}医生接诊，{nname}护士完成入院宣教。",
    "家属{cname}（{rel}）陪同就诊，联系电话{mobile}。",
    "患者之女{cname}代为签署知情同意书。",
    "上级医师：{dname}。",
    "患者于{date}行冠脉造影，术中植入支架1枚，设备序列号：{serial}。",
    "心电监护仪编号{serial}，数据经IP地址{ip}上传。",
    "随访请登录{url}查看报告。",
    "如有疑问请发邮件至{email}。",
    "主治医师执业证书编码：{lic}。",
    "患者驾驶车辆车牌号{plate}，于{date}发生交通事故。",
    "肇事车辆{plate}已由交警处理。",
    "医保结算账号：{acct}。",
    "患者提供的身份证号{badid}经核对有误，已请家属重新提供。",
    "既往有银行卡{badcard}扣费失败记录。",
    "床号：12床，病房：3楼西区。",
    "出院医嘱：2周后门诊复查，低盐低脂饮食，每日步行6000步。",
    "{age_young}岁时曾行阑尾切除术，2015年诊断{cond}。",
    "其母亲{age_old}岁，体健。",
    "联系座机{landline}，工作日可接听。",
    "门诊随访时间：{date}上午9点。",
]
ZH_FOOTER = ["\n记录人：{nname}", "\n医师签名：{dname}  日期：{date}", "\n审核人：{dname}"]
ZH_REL = ["女儿", "儿子", "妻子", "丈夫", "侄子"]


def zh_fields(g: Gen) -> dict:
    pname, cname, dname, nname = g.zh_name(), g.zh_name(), g.zh_name(), g.zh_name()
    old = str(g.r.randint(90, 103))
    return {
        "pname": (NAME, pname),
        "cname": (NAME, cname),
        "dname": (NAME, dname),
        "nname": (NAME, nname),
        "dsur": (NAME, dname[:2] if dname[:2] in ("欧阳", "司马", "诸葛", "上官") else dname[0]),
        "sex": (None, g.pick(["男", "女"])),
        "rel": (None, g.pick(ZH_REL)),
        "age_any": (AGE, old) if g.r.random() < 0.4 else (None, str(g.r.randint(18, 89))),
        "age_old": lambda: (AGE, str(g.r.randint(90, 103))),
        "age_young": (None, str(g.r.randint(5, 60))),
        "cond": (None, g.pick(ZH_CONDITIONS)),
        "cnid": (CN_ID, g.cn_id()),
        "badid": lambda: (None, g.cn_id(valid=False)),
        "mobile": lambda: (CN_MOBILE, g.cn_mobile()),
        "landline": lambda: (PHONE, g.cn_landline()),
        "fax": lambda: (FAX, g.cn_landline()),
        "mrn": (MRN, g.zh_mrn()),
        "date": lambda: (DATE, g.zh_date(2015, 2025)),
        "dob": lambda: (DATE, g.zh_date(1925, 2005)),
        "hp": (HEALTH_PLAN, g.health_plan()),
        "card": lambda: (BANK_CARD, g.card()),
        "badcard": lambda: (None, g.card(valid=False)),
        "zip": lambda: (ZIP, g.digits(6)),
        "email": lambda: (EMAIL, g.email("", "", zh=True)),
        "serial": lambda: (DEVICE, g.serial()),
        "ip": lambda: (IP, g.ip()),
        "url": lambda: (URL, g.url()),
        "lic": lambda: (LICENSE, g.digits(15)),
        "plate": lambda: (VEHICLE, g.cn_plate()),
        "acct": lambda: (ACCOUNT, g.account()),
    }


def zh_note(g: Gen) -> Note:
    note, fields = Note(), zh_fields(g)
    for line in g.r.sample(ZH_HEADER, g.r.randint(4, 8)):
        note.fill(line, fields)
    for sentence in g.r.sample(ZH_BODY, g.r.randint(5, 9)):
        note.fill(sentence, fields)
    note.fill(g.pick(ZH_FOOTER), fields)
    return note


def build() -> list[dict]:
    g = Gen(random.Random(SEED))
    notes = [("en", en_note(g)) for _ in range(N_EN)] + [("zh", zh_note(g)) for _ in range(N_ZH)]
    return [
        {"id": f"{lang}-{i:03d}", "lang": lang, "text": "".join(n.parts), "spans": n.spans}
        for i, (lang, n) in enumerate(notes)
    ]


def main() -> None:
    records = build()
    with OUT.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for rec in records:
        for s in rec["spans"]:
            counts[s["type"]] = counts.get(s["type"], 0) + 1
    print(f"{len(records)} notes -> {OUT}")
    for kind, n in sorted(counts.items()):
        print(f"  {kind:12} {n}")


if __name__ == "__main__":
    main()
