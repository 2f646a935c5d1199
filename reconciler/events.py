"""Events of one round: state transitions to record, `state_events` that match them, and log
events (`substring`, `regex`, `inactivity`) that fire. A fired event is keyed (attempt, file,
byte offset; or the transition; or inactivity once per attempt) and skipped when its key is in
the attempt's ledger already. Each log match is keyed by attempt, file and byte offset (and
link, in a chain): re-reading after a crash finds the same keys and fires nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .actions import Fired, Observed, StateSeen
from .model import Attempt, Current, LockJob, LogLine, Observation


def observations(
    job: LockJob, latest: Attempt, now_state: Current, obs: Observation, now: datetime
) -> list[Observed]:
    """State changes to record, and the log and state events that fire, in this round."""
    out: list[Observed] = []
    name, attempt = job.name, latest.attempt
    seen_state = now_state.state if now_state.state != "UNKNOWN" else None
    if seen_state and seen_state != latest.last_state:
        out.append(
            StateSeen(
                name,
                f"{latest.last_state or 'SUBMITTED'} -> {seen_state}",
                attempt=attempt,
                job_id=now_state.job_id,
                state=seen_state,
            )
        )
        for event in job.state_events:
            source, target = event.get("from", "*"), event["to"]
            if target in ("*", seen_state) and source in ("*", latest.last_state or "PENDING"):
                key = f"{event.get('name', 'state')}@state:{latest.last_state}->{seen_state}"
                if not latest.fired(key):
                    out.append(
                        fire(
                            name,
                            attempt,
                            now_state,
                            key,
                            event,
                            {"trigger": f"{latest.last_state or 'SUBMITTED'} -> {seen_state}"},
                        )
                    )
    fired_names = {e.get("event") for e in latest.events}
    read = obs.logs.get(name)
    if read is not None:
        pattern_events = [e for e in job.watched_log_events if e["kind"] in ("substring", "regex")]
        for match in matches(pattern_events, read.lines):
            event_name = match.event["name"]
            if latest.fired(match.key):
                continue
            if match.event.get("match_once") and event_name in fired_names:
                continue
            fired_names.add(event_name)
            out.append(
                fire(
                    name,
                    attempt,
                    now_state,
                    match.key,
                    match.event,
                    {
                        "trigger": "log",
                        "file": match.line.file,
                        "offset": match.line.offset,
                        "line": match.line.text,
                        "groups": list(match.groups),
                        "named": dict(match.named),
                        **({"link": match.line.link} if match.line.link else {}),
                    },
                )
            )
    if now_state.state == "RUNNING":
        last_growth = obs.log_growth.get(name)
        for event in job.watched_log_events:
            if event["kind"] != "inactivity" or last_growth is None:
                continue
            silent = (now - last_growth).total_seconds()
            key = f"{event['name']}@inactivity"
            if silent >= event["seconds"] and not latest.fired(key):
                out.append(
                    fire(
                        name,
                        attempt,
                        now_state,
                        key,
                        event,
                        {"trigger": f"no log output for {int(silent)} s"},
                    )
                )
    return out


def fire(
    job: str,
    attempt: int,
    now_state: Current,
    key: str,
    event: Mapping[str, Any],
    details: Mapping[str, Any],
) -> Fired:
    record = {
        "key": key,
        "event": event.get("name", "state"),
        # In a chain: the link it fired on (a log line names its own link).
        **({"link": now_state.link} if now_state.link is not None else {}),
        **details,
        "actions": list(event["actions"]),
    }
    return Fired(
        job,
        f"event {record['event']}: {details.get('trigger')}",
        attempt=attempt,
        job_id=now_state.job_id,
        event=record,
        job_ids=now_state.live_ids,
        queued_ids=queued(now_state),
    )


def queued(now_state: Current) -> tuple[str, ...]:
    """The attempt's jobs that are still pending in the queue."""
    if now_state.chain is not None:
        return tuple(
            link.job_id
            for link in now_state.chain.live
            if link.job_id is not None and link.state == "PENDING"
        )
    pending = now_state.state == "PENDING" and now_state.job_id is not None
    return (now_state.job_id,) if pending and now_state.job_id else ()


@dataclass(frozen=True)
class Match:
    event: Mapping[str, Any]
    line: LogLine
    groups: tuple[str, ...]
    named: Mapping[str, str]

    @property
    def key(self) -> str:
        # Later links of a chain may write the same file again (a log path without %j).
        link = f"#link{self.line.link}" if self.line.link > 1 else ""
        return f"{self.event['name']}@{self.line.file}:{self.line.offset}{link}"


def matches(events: Sequence[Mapping[str, Any]], lines: Sequence[LogLine]) -> Iterator[Match]:
    """Every (event, line) pair that matches, in file order, events in config order."""
    for line in lines:
        for event in events:
            kind = event["kind"]
            if kind == "substring" and event["pattern"] in line.text:
                yield Match(event, line, (event["pattern"],), {})
            elif kind == "regex":
                found = _compiled(event["pattern"]).search(line.text)
                if found:
                    groups = (found.group(0), *(g or "" for g in found.groups()))
                    named = {k: v or "" for k, v in found.groupdict().items()}
                    yield Match(event, line, groups, named)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        found = _CACHE[pattern] = re.compile(pattern)
    return found
