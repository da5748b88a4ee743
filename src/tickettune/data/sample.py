"""A built-in sample of SYNTHETIC ServiceNow incidents, so that the demo and the tests need no outside files.

Every incident is invented (see `sample_catalog`): callers, numbers, addresses and phone numbers are
fictitious (example.com, the 555-01xx and 020 7946 0xxx drama ranges). The export looks like a ServiceNow
incident list export: the fields and values hang together (category, subcategory, configuration item,
assignment group, impact x urgency = priority, opened before resolved). Incidents caused by one problem
share its `problem_id`, or point at the problem's first incident through `parent_incident`, and are
written by different people in different words; other problems and one-off requests on the same items
are the near misses. The same `n` and `seed` always give the same table.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from tickettune.core.errors import UserError
from tickettune.data.sample_catalog import LISTS, ONE_OFFS, PROBLEMS, SHARES, SOFTWARE, OneOff, Problem

FIELDS = ("number", "opened_at", "caller_id", "contact_type", "category", "subcategory", "cmdb_ci",
          "assignment_group", "assigned_to", "impact", "urgency", "priority", "state", "short_description",
          "description", "problem_id", "parent_incident", "close_code", "close_notes", "resolved_at", "u_data_source")
# The same columns as ServiceNow's display labels (an export with "Display values" headers).
LABELS = dict(zip(FIELDS, (
    "Number", "Opened", "Caller", "Channel", "Category", "Subcategory", "Configuration item", "Assignment group",
    "Assigned to", "Impact", "Urgency", "Priority", "State", "Short description", "Description", "Problem",
    "Parent Incident", "Resolution code", "Resolution notes", "Resolved", "Data source")))
SYNTHETIC_NOTE = "SYNTHETIC tickettune sample (seed {seed}): invented incidents, not real data"

FIRST = ("Alice", "Ben", "Chloe", "Daniel", "Emma", "Farid", "Grace", "Hugo", "Isla", "Jack", "Kavya", "Liam", "Maria",
         "Noah", "Olivia", "Pavel", "Quinn", "Ruth", "Samir", "Tara", "Umar", "Vera", "Wei", "Yusuf", "Zoe", "Aoife",
         "Bruno", "Carmen", "Dmitri", "Elif", "Femi", "Hannah", "Ines", "Jonas", "Leila", "Marek", "Niamh", "Oscar")
LAST = ("Adams", "Baker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hughes", "Iqbal", "Jansen", "Kowalski",
        "Lopez", "Murphy", "Nowak", "O'Brien", "Patel", "Rossi", "Schmidt", "Taylor", "Usman", "Visser", "Walsh",
        "Young", "Zhang", "Andersson", "Byrne", "Chen", "Dalton", "Ferreira", "Novak", "Okafor", "Sato")
DEPARTMENTS = ("Finance", "Sales", "HR", "Procurement", "Legal", "Marketing", "Engineering", "Customer Service",
               "Logistics", "Facilities")
JOBS = ("Analyst", "Senior Accountant", "Account Manager", "HR Advisor", "Buyer", "Paralegal", "Team Lead",
        "Project Manager", "Engineer", "Customer Service Agent", "Office Manager", "Director")
SITES = ("London", "Manchester", "Leeds", "Dublin", "Rotterdam", "Madrid")
SITE_CODES = {"London": "LON", "Manchester": "MAN", "Leeds": "LDS", "Dublin": "DUB", "Rotterdam": "RTM", "Madrid": "MAD"}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
STARTS = ("on Monday", "next Monday", "on the first of the month", "next Wednesday", "in two weeks")
TRIED = ("restarted the laptop", "logged off and on again", "cleared the browser cache", "checked the cables",
         "reinstalled the client", "tried a colleague's machine", "ran Windows Update")
CONTEXT = ("I sit on floor {floor} in the {site} office.", "My laptop is {asset}.", "It started around {time}.",
           "I already {tried}.", "My manager {person} is also affected.", "I'm working from home today.",
           "This is blocking my work.", "Not urgent but annoying.", "I have a meeting at {time} where I need this.")
ONE_OFF_SHARE = 0.12
SHORT_ONLY = 0.12
START, END = dt.datetime(2024, 1, 8, 8), dt.datetime(2024, 12, 20, 18)
PRIORITY = {(1, 1): 1, (1, 2): 2, (1, 3): 3, (2, 1): 2, (2, 2): 3, (2, 3): 4, (3, 1): 3, (3, 2): 4, (3, 3): 5}
PRIORITY_NAMES = {1: "1 - Critical", 2: "2 - High", 3: "3 - Moderate", 4: "4 - Low", 5: "5 - Planning"}
LEVEL_NAMES = {1: "1 - High", 2: "2 - Medium", 3: "3 - Low"}


@dataclass
class Caller:
    """A fictitious employee; contact details are in reserved ranges and domains."""

    first: str
    last: str
    department: str
    job: str
    site: str
    phone: str

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def user_id(self) -> str:
        return f"{self.first}.{self.last}".lower().replace("'", "")

    @property
    def email(self) -> str:
        return f"{self.user_id}@example.com"


def _caller(rng: random.Random) -> Caller:
    site = rng.choice(SITES)
    phone = rng.choice((f"+44 20 7946 0{rng.randint(100, 999)}", f"(555) 01{rng.randint(10, 99)}",
                        f"+1 555-01{rng.randint(10, 99)}", f"020 7946 0{rng.randint(100, 999)}"))
    return Caller(rng.choice(FIRST), rng.choice(LAST), rng.choice(DEPARTMENTS), rng.choice(JOBS), site, phone)


def _context(rng: random.Random, caller: Caller) -> dict[str, str]:
    """Values for the {placeholders} of the catalogue's sentences."""
    return {"site": caller.site, "floor": str(rng.randint(1, 9)), "n": str(rng.randint(2, 40)),
            "time": rng.choice(("9:30", "10am", "11:00", "noon", "2pm", "14:30", "3pm", "4:15")),
            "day": rng.choice(DAYS), "start": rng.choice(STARTS), "asset": f"LT-{rng.randint(1000, 99999):05d}",
            "version": f"16.0.{rng.randint(17000, 18200)}.{rng.randint(20000, 20300)}",
            "share": rng.choice(SHARES), "dl": rng.choice(LISTS), "app": rng.choice(SOFTWARE),
            "person": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "tried": rng.choice(TRIED)}


def _typos(text: str, rate: float, rng: random.Random) -> str:
    """Swap or drop a letter in some longer words, as hurried typing does."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) > 4 and word.isalpha() and rng.random() < rate:
            k = rng.randint(1, len(word) - 3)
            words[i] = word[:k] + word[k + 1] + word[k] + word[k + 2:] if rng.random() < 0.6 else word[:k] + word[k + 1:]
    return " ".join(words)


def _signature(caller: Caller, rng: random.Random) -> str:
    return rng.choice((
        f"Thanks,\n{caller.first}",
        f"Kind regards,\n{caller.full}\n{caller.job} | {caller.department}\nTel: {caller.phone}\n{caller.email}",
        f"Best,\n{caller.full}\n{caller.job}, {caller.site}\nM: {caller.phone}",
        f"Cheers\n{caller.first}",
        f"Regards\n{caller.full} ({caller.user_id})",
    ))


# How different people write the same problem: each persona turns (title, sentences) into
# (short description, description); the channel is how the ticket reached the service desk.
def _terse(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    return title.lower(), body[0]


def _polite(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    greeting = rng.choice(("Hi,", "Hello IT,", "Hi team,", "Good morning,"))
    return title, f"{greeting}\n\n{' '.join(body)}\n\n{_signature(caller, rng)}"


def _formal(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    return title, ("Dear IT Service Desk,\n\nI would like to report the following issue. " + " ".join(body)
                   + "\n\nCould you please look into this at your earliest convenience?\n\n" + _signature(caller, rng))


def _frustrated(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    opener = rng.choice(("This is the second time this week!!", "URGENT.", "Still not fixed!!",
                         "I have lost half a day because of this."))
    closer = rng.choice(("Please fix ASAP, I cannot work.", "Call me back immediately.",
                         "Escalate this please!!!", f"Call me on {caller.phone}."))
    return (title.upper() if rng.random() < 0.5 else f"{title}!!!"), f"{opener} {' '.join(body)} {closer}"


def _non_native(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    text = " ".join(body).replace("I can't", "I am not able to").replace("doesn't", "is not")
    return (f"{title} - kindly check",
            f"Dear team,\n{text} It is not working since morning. Kindly check and do the needful.\n"
            f"Thanks and regards,\n{caller.full}")


def _agent(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    host = f"WS-{SITE_CODES[caller.site]}-{rng.randint(100, 999)}"
    address = f"10.{rng.randint(10, 99)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
    return title, (f"Caller {caller.full} ({caller.user_id}) called from {caller.site}.\nUser reports: {' '.join(body)}\n"
                   f"Workstation {host}, IP {address}.\nTroubleshooting: {rng.choice(TRIED)}, issue persists.\n"
                   f"Callback number {caller.phone}. Routing to resolver group.")


def _email(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    return (f"{rng.choice(('FW:', 'RE:', 'Fwd:'))} {title}",
            f"From: {caller.full} <{caller.email}>\nTo: IT Service Desk <servicedesk@example.com>\nSubject: {title}\n\n"
            f"Hello,\n{' '.join(body)}\n\n{_signature(caller, rng)}")


def _mobile(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    return title, f"{body[0]}\n\nSent from my iPhone"


def _chat(title: str, body: list[str], caller: Caller, rng: random.Random) -> tuple[str, str]:
    lines = [f"{caller.first}: {body[0]}", "Virtual Agent: I'm sorry to hear that. Have you tried restarting?",
             f"{caller.first}: yes, {rng.choice(TRIED)}, still the same"]
    lines += [f"{caller.first}: {sentence}" for sentence in body[1:2]]
    lines.append("Virtual Agent: I have created an incident for you. A technician will contact you.")
    return title, "Chat transcript\n" + "\n".join(lines)


Persona = Callable[[str, list[str], Caller, random.Random], tuple[str, str]]
PERSONAS: dict[str, tuple[Persona, float, str, float]] = {
    # name: (renderer, typo rate, channel, weight)
    "terse": (_terse, 0.04, "Self-service", 1.2),
    "polite": (_polite, 0.02, "Self-service", 2.0),
    "formal": (_formal, 0.0, "Email", 1.0),
    "frustrated": (_frustrated, 0.06, "Phone", 0.8),
    "non_native": (_non_native, 0.05, "Email", 0.8),
    "agent": (_agent, 0.01, "Phone", 1.4),
    "email": (_email, 0.02, "Email", 1.0),
    "mobile": (_mobile, 0.08, "Email", 0.6),
    "chat": (_chat, 0.05, "Chat", 0.7),
}


def _fill(text: str, context: dict[str, str]) -> str:
    return text.format_map(context)


def _problem_sentences(problem: Problem, rng: random.Random, context: dict[str, str]) -> tuple[str, list[str]]:
    symptoms = rng.sample(problem.symptoms, k=min(len(problem.symptoms), rng.choice((1, 1, 2))))
    details = rng.sample(problem.details, k=min(len(problem.details), rng.choice((0, 1, 1, 2))))
    extra = [rng.choice(CONTEXT)] if rng.random() < 0.4 else []
    sentences = symptoms + details + extra
    if rng.random() < 0.25:
        rng.shuffle(sentences)
    return _fill(rng.choice(problem.titles), context), [_fill(s, context) for s in sentences]


def _one_off_sentences(item: OneOff, rng: random.Random, context: dict[str, str]) -> tuple[str, list[str]]:
    title, body = rng.choice(item.requests)
    sentences = [body] + ([rng.choice(CONTEXT)] if rng.random() < 0.3 else [])
    return _fill(title, context), [_fill(s, context) for s in sentences]


def _business_time(moment: dt.datetime, rng: random.Random) -> dt.datetime:
    """Move a time into office hours on a weekday, where most incidents are opened."""
    if moment.hour < 8 or moment.hour >= 18:
        moment = moment.replace(hour=rng.randint(8, 17))
    while moment.weekday() >= 5:
        moment += dt.timedelta(days=1)
    return min(moment, END)


def _incident_counts(n: int, rng: random.Random) -> list[int]:
    """Incidents per problem: uneven like real problems, at least two each when there are enough incidents."""
    per_problem = n - round(n * ONE_OFF_SHARE)
    active = min(len(PROBLEMS), max(1, per_problem // 2))
    chosen = sorted(rng.sample(range(len(PROBLEMS)), active))
    counts = [0] * len(PROBLEMS)
    weights = [rng.lognormvariate(0, 0.6) for _ in chosen]
    for index in chosen:
        counts[index] = 2 if per_problem >= 2 * active else 1
    for index in rng.choices(chosen, weights=weights, k=per_problem - sum(counts)):
        counts[index] += 1
    return counts


def generate_sample(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """`n` synthetic incidents in ServiceNow export layout (columns FIELDS), the same for the same seed."""
    if not isinstance(n, int) or n < 10:
        raise UserError(f"sample size n={n!r} is too small; ask for at least 10 incidents")
    rng = random.Random(seed)
    onsets = [_business_time(START + dt.timedelta(days=rng.randint(0, 330), hours=rng.randint(0, 9)), rng)
              for _ in PROBLEMS]
    drafts: list[dict] = []
    for index, count in enumerate(_incident_counts(n, rng)):
        for _ in range(count):
            delay = dt.timedelta(hours=min(rng.expovariate(1 / 30), 24 * 20))
            drafts.append({"problem": index, "opened": _business_time(onsets[index] + delay, rng)})
    while len(drafts) < n:
        opened = START + dt.timedelta(seconds=rng.randint(0, int((END - START).total_seconds())))
        drafts.append({"problem": None, "opened": _business_time(opened, rng), "item": rng.choice(ONE_OFFS)})
    drafts.sort(key=lambda d: (d["opened"], d["problem"] if d["problem"] is not None else -1))
    agents = {group: [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(3)]
              for group in sorted({p.group for p in PROBLEMS} | {o.group for o in ONE_OFFS})}
    first_incident: dict[int, str] = {}
    rows = []
    for i, draft in enumerate(drafts):
        rows.append(_incident(i, draft, rng, agents, first_incident, seed))
    return pd.DataFrame(rows, columns=list(FIELDS))


def _incident(i: int, draft: dict, rng: random.Random, agents: dict[str, list[str]], first_incident: dict[int, str],
              seed: int) -> dict[str, str]:
    """One incident row: text from a persona, fields that agree with its problem or request."""
    number = f"INC{10001 + i:07d}"
    caller = _caller(rng)
    context = _context(rng, caller)
    index = draft["problem"]
    item: Problem | OneOff = PROBLEMS[index] if index is not None else draft["item"]
    title, body = (_problem_sentences(item, rng, context) if isinstance(item, Problem)
                   else _one_off_sentences(item, rng, context))
    names = list(PERSONAS)
    persona = rng.choices(names, weights=[PERSONAS[p][3] for p in names])[0]
    render, typo_rate, channel, _ = PERSONAS[persona]
    short, description = render(title, body, caller, rng)
    short, description = _typos(short, typo_rate, rng), _typos(description, typo_rate, rng)
    if rng.random() < SHORT_ONLY:
        description = ""
    impact = item.impact if isinstance(item, Problem) else 3
    urgency = 1 if persona == "frustrated" else rng.choice((2, 2, 3))
    priority = PRIORITY[(impact, urgency)]
    opened: dt.datetime = draft["opened"]
    row = {"number": number, "opened_at": f"{opened:%Y-%m-%d %H:%M:%S}", "caller_id": caller.full,
           "contact_type": channel, "category": item.category, "subcategory": item.subcategory, "cmdb_ci": item.ci,
           "assignment_group": item.group, "assigned_to": rng.choice(agents[item.group]),
           "impact": LEVEL_NAMES[impact], "urgency": LEVEL_NAMES[urgency], "priority": PRIORITY_NAMES[priority],
           "short_description": short, "description": description, "problem_id": "", "parent_incident": "",
           "u_data_source": SYNTHETIC_NOTE.format(seed=seed)}
    if isinstance(item, Problem):
        problem_number = f"PRB{40001 + index:07d}"
        parent = first_incident.setdefault(index, number)
        # Some incidents are linked only to the problem's first incident, as agents often do.
        link = "problem" if parent == number else rng.choices(("problem", "parent", "both"), weights=(6, 2, 2))[0]
        row["problem_id"] = problem_number if link in ("problem", "both") else ""
        row["parent_incident"] = parent if link in ("parent", "both") else ""
        row["close_code"] = rng.choice(("Solved (Permanently)", "Solved (Work Around)", "Solved Remotely (Permanently)"))
        row["close_notes"] = rng.choice((f"Resolved by {problem_number}: {item.fix}", item.fix,
                                         f"Fixed centrally. {item.fix} User confirmed."))
        hours = rng.uniform(2, 24 * (4 - impact) * 2)
    else:
        row["close_code"] = rng.choice(("Solved (Permanently)", "Solved Remotely (Permanently)", "Closed/Resolved by Caller"))
        row["close_notes"] = rng.choice(("Request completed.", "Provided instructions to the user.",
                                         "Done, user confirmed.", "Replaced and tested with the user."))
        hours = rng.uniform(1, 24 * 5)
    resolved = opened + dt.timedelta(hours=hours)
    if resolved > END:
        row.update(state="In Progress", close_code="", close_notes="", resolved_at="")
    else:
        row.update(state="Closed" if resolved < END - dt.timedelta(days=7) else "Resolved",
                   resolved_at=f"{resolved:%Y-%m-%d %H:%M:%S}")
    return row


def write_sample(frame: pd.DataFrame, path: str | Path, labels: bool = False, overwrite: bool = False) -> Path:
    """Write the sample as CSV (a ServiceNow list export), Table API JSON ({"result": [...]}) or XLSX, by suffix."""
    from tickettune.core.jsonio import write_json

    path = Path(path)
    kind = "".join(s.lower() for s in path.suffixes[-1:])
    if kind not in (".csv", ".json", ".xlsx"):
        raise UserError(f"{path}: unknown sample format '{kind or 'no suffix'}'; end the file name in .csv, .json or .xlsx")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another -o")
    out = frame.rename(columns=LABELS) if labels else frame
    if kind == ".json":
        write_json(path, {"result": out.to_dict("records")})
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        if kind == ".csv":
            out.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
        else:
            out.to_excel(tmp, index=False, engine="openpyxl")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
