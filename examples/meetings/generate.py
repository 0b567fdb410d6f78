"""Synthetic team messages that each name one meeting, and the meeting's day,
time and room as the answer: the task `make demo` tunes SmolLM2-135M-Instruct on.

    python examples/meetings/generate.py --rows 400 --out meetings.jsonl
    python examples/meetings/generate.py --rows 200 --preference --out pairs.jsonl

Each row is a chat example (`messages`: a short system instruction, the
message, the answer "Thursday 10:30, room C4"). The messages are written
many ways (a request, a booking, a reminder, a meeting that moved from
one day to another), so the answer has to be read from the message: a
model that has not learnt the task replies with prose around it, or
with the day the meeting moved away from. Deterministic for a seed.

With --preference the rows are preference pairs for DPO (`prompt`: the system
instruction and the message; `chosen`: the right answer; `rejected`: the same
answer with one part wrong: another day, time or room, named in the message
where it names one). Both answers have the same form, so nothing but reading
the message tells them apart.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SYSTEM = "Find the meeting in the message. Reply with its day, time and room only."
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
TIMES = ["08:30", "09:00", "09:15", "10:30", "11:00", "11:45", "13:00", "14:00", "14:30", "15:30", "16:00", "16:45"]
ROOMS = [f"{letter}{digit}" for letter in "ABCDEF" for digit in range(1, 10)]
EVENTS = ["standup", "budget review", "design sync", "retro", "planning", "product demo", "interview", "offsite prep",
          "code review", "sales call"]
NAMES = ["Maya", "Omar", "Lena", "Ravi", "Sofia", "Jonas", "Aiko", "Tom", "Ines", "Kwame"]
TEMPLATES = [
    "Can we hold the {event} on {day} at {time} in room {room}? Thanks, {name}",
    "{name} here: I booked room {room} for the {event}, {day} {time}.",
    "Reminder: the {event} is on {day} at {time}, room {room}.",
    "Could you join the {event} in {room} on {day}? We start at {time}. - {name}",
    "The {event} moved from {other} to {day} at {time}; same room, {room}.",
    "Room {room} is free on {day}, not {other}, so the {event} is then, at {time}.",
    "{name}: {event} on {day}, {time} sharp, in {room}.",
    "Heads up, the {event} is no longer on {other}. New slot: {day} {time}, room {room}.",
]
ANSWER = "{day} {time}, room {room}"


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n chat rows: system instruction, the message, the meeting's "day time, room"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        day, other = rng.sample(DAYS, 2)
        fields = {"day": day, "other": other, "time": rng.choice(TIMES), "room": rng.choice(ROOMS),
                  "event": rng.choice(EVENTS), "name": rng.choice(NAMES)}
        rows.append({"messages": [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": rng.choice(TEMPLATES).format(**fields)},
                                  {"role": "assistant", "content": ANSWER.format(**fields)}]})
    return rows


def make_preference_rows(n: int, seed: int = 0) -> list[dict]:
    """n preference rows: the message, its right answer and one with a part changed."""
    rng = random.Random(seed)
    rows = []
    for row in make_rows(n, seed):
        system, user, answer = row["messages"]
        day, clock, room = answer["content"].replace(",", "").replace(" room", "").split(" ")
        # The day the meeting moved away from when the message names one, else another day.
        other_day = next((d for d in DAYS if d != day and d in user["content"]), None) or rng.choice([d for d in DAYS if d != day])
        wrong = rng.choice([
            ANSWER.format(day=other_day, time=clock, room=room),
            ANSWER.format(day=day, time=rng.choice([t for t in TIMES if t != clock]), room=room),
            ANSWER.format(day=day, time=clock, room=rng.choice([r for r in ROOMS if r != room])),
        ])
        rows.append({"prompt": [system, user], "chosen": [answer], "rejected": [{"role": "assistant", "content": wrong}]})
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preference", action="store_true", help="preference pairs (prompt, chosen, rejected) for DPO")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write(args.out, (make_preference_rows if args.preference else make_rows)(args.rows, args.seed))
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
