#!/usr/bin/python3
"""The checker of the fault tests: reads what run.py recorded in a results folder and looks for
every way the "never a duplicate across servers" guarantee can break.

    check.py RESULTS_DIR [--json PATH]      (exit 0 when nothing is found)

Inputs (written by run.py): clients/*.log (one line per call, see client.py), instances.json
(every zaptid serve started: address, host, pid, clock offset, TTL, times), watch*.jsonl and
replay*.jsonl (`etcdctl watch -w json` of the prefix, live and replayed from revision 1),
final.json (the highwater keys at the end), faults.json (what was done when).

Checks, per Sonyflake machine id (id & 0xFFFF; the cursor is id >> 16):
 (a) duplicates: an ID returned more than once, by anyone (each call's IDs are one or more runs
     of consecutive cursors, so this is an interval overlap sweep, exact);
 (b) holder order: calls sorted by receive time form tenures (maximal runs by one server process);
     every ID of a tenure must lie above every ID of all earlier tenures. A later holder that
     returns an ID below one an earlier holder already returned is reported, as is a process
     that comes back after another held the id;
 (c) the watch log: any decrease of highwater/<id>, except one written in the same revision
     (transaction) as a delete of machines/<id> -- a clean release, which may lower the record
     to the last cursor issued. Releases are counted separately and must still be >= every
     cursor returned with that id up to and including the releasing holder's tenure;
 (d) at the end every highwater/<id> is >= every cursor returned with that id.
"""
import argparse
import base64
import collections
import glob
import json
import os
import re
import sys

SEQ_BITS = 8


def parse_calls(paths):
    """Returns (calls, runs). calls: list of (t_send, t_recv, addr, method, status, n_ids).
    runs: list of (mid, first_cursor, last_cursor, t_recv, addr) -- consecutive cursors of one call."""
    calls, runs = [], []
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 5:
                    continue
                try:
                    t0, t1 = float(parts[0]), float(parts[1])
                except ValueError:
                    continue
                addr, method, status = parts[2], parts[3], parts[4]
                ids = [int(x) for x in parts[5].split(",")] if len(parts) > 5 and parts[5] else []
                calls.append((t0, t1, addr, method, status, len(ids)))
                cur = None
                for i in ids:
                    mid, c = i & 0xFFFF, i >> 16
                    if cur and cur[0] == mid and c == cur[2] + 1:
                        cur[2] = c
                    else:
                        if cur:
                            runs.append((cur[0], cur[1], cur[2], t1, addr))
                        cur = [mid, c, c]
                if cur:
                    runs.append((cur[0], cur[1], cur[2], t1, addr))
    return calls, runs


def find_duplicates(runs, limit=20):
    """Interval sweep per machine id. Returns (count of repeated IDs, examples)."""
    by_mid = collections.defaultdict(list)
    for r in runs:
        by_mid[r[0]].append(r)
    total, examples, cross = 0, [], 0
    for mid, rs in by_mid.items():
        rs.sort(key=lambda r: (r[1], r[2]))
        max_end, owner = -1, None
        for r in rs:
            if r[1] <= max_end:
                n = min(r[2], max_end) - r[1] + 1
                total += n
                if owner[4] != r[4]:
                    cross += n
                if len(examples) < limit:
                    examples.append({"machine_id": mid, "first_id": (r[1] << 16) | mid, "count": n,
                                     "by": r[4], "at": r[3], "also_by": owner[4], "also_at": owner[3]})
            if r[2] > max_end:
                max_end, owner = r[2], r
    return total, cross, examples


def tenures(runs):
    """Per machine id: list of tenures [addr, t_first, t_last, min_cursor, max_cursor, n_runs] in
    receive-time order."""
    by_mid = collections.defaultdict(list)
    for r in runs:
        by_mid[r[0]].append(r)
    out = {}
    for mid, rs in by_mid.items():
        rs.sort(key=lambda r: r[3])
        ts = []
        for r in rs:
            if ts and ts[-1][0] == r[4]:
                t = ts[-1]
                t[2] = r[3]
                t[3] = min(t[3], r[1])
                t[4] = max(t[4], r[2])
                t[5] += 1
            else:
                ts.append([r[4], r[3], r[3], r[1], r[2], 1])
        out[mid] = ts
    return out


def order_violations(runs, limit=20):
    """(b): IDs below the highest ID of an earlier tenure of the same machine id."""
    by_mid = collections.defaultdict(list)
    for r in runs:
        by_mid[r[0]].append(r)
    total, examples = 0, []
    for mid, rs in by_mid.items():
        rs.sort(key=lambda r: r[3])
        before = -1      # max cursor of all finished tenures
        current, cur_max = None, -1
        for r in rs:
            if r[4] != current:
                before = max(before, cur_max)
                current, cur_max = r[4], -1
            if r[1] <= before:
                n = min(r[2], before) - r[1] + 1
                total += n
                if len(examples) < limit:
                    examples.append({"machine_id": mid, "first_id": (r[1] << 16) | mid, "count": n, "by": r[4],
                                     "at": r[3], "earlier_max_cursor": before, "cursor": r[1]})
            cur_max = max(cur_max, r[2])
    return total, examples


def parse_watch(paths):
    """Every event of the watch logs, deduplicated: {(rev, key, type): value}."""
    events = {}
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                for ev in msg.get("Events") or []:
                    kv = ev.get("kv", {})
                    key = base64.b64decode(kv.get("key", "")).decode(errors="replace")
                    value = base64.b64decode(kv.get("value", "")).decode(errors="replace") if kv.get("value") else ""
                    typ = ev.get("type", 0)
                    typ = "DELETE" if typ in (1, "DELETE") else "PUT"
                    events[(int(kv.get("mod_revision", 0)), key, typ)] = value
    return events


def watch_checks(events, prefix, tens, exits=None, limit=30):
    """(c) on the events. Returns a dict of findings."""
    hw_re = re.compile("^" + re.escape(prefix) + r"highwater/(\d+)$")
    m_re = re.compile("^" + re.escape(prefix) + r"machines/(\d+)$")
    by_rev = collections.defaultdict(list)
    for (rev, key, typ), value in events.items():
        by_rev[rev].append((key, typ, value))
    last_hw, last_holder = {}, {}
    decreases, releases, bad_releases, hw_writes, holder_puts = [], 0, [], 0, 0
    for rev in sorted(by_rev):
        evs = by_rev[rev]
        deleted = {int(m_re.match(k).group(1)) for k, t, _ in evs if t == "DELETE" and m_re.match(k)}
        for key, typ, value in evs:
            m = m_re.match(key)
            if m and typ == "PUT":
                holder_puts += 1
                a = re.search(r"\baddr=(\S+)", value)
                last_holder[int(m.group(1))] = a.group(1) if a else None
        for key, typ, value in evs:
            m = hw_re.match(key)
            if not m or typ != "PUT":
                continue
            mid = int(m.group(1))
            hw_writes += 1
            try:
                v = int(value.strip())
            except ValueError:
                decreases.append({"rev": rev, "machine_id": mid, "value": value, "problem": "not a cursor"})
                continue
            prev = last_hw.get(mid)
            if mid in deleted:
                releases += 1
                who = last_holder.get(mid)
                need = release_floor(tens.get(mid, []), who)
                if need is not None and v < need:
                    bad_releases.append({"rev": rev, "machine_id": mid, "value": v, "returned_max": need,
                                         "holder": who})
            elif prev is not None and v < prev:
                decreases.append({"rev": rev, "machine_id": mid, "from": prev, "to": v, "by": last_holder.get(mid),
                                  "seconds_down": round((prev - v) / 25600.0, 2)})
            last_hw[mid] = v
    # A decrease by a server that then stopped cleanly (exit 0), followed (before any other write
    # for that id) by the delete of its machines key, is a release done in two steps (lower, then
    # revoke the lease): still a decrease, but told apart from late writes.
    exits = exits or {}
    for d in decreases:
        if "from" not in d or exits.get(d.get("by"), "?") != 0:
            continue
        for rev in sorted(r for r in by_rev if r > d["rev"]):
            keys = [(k, t) for k, t, _ in by_rev[rev]
                    if k in (prefix + "machines/%d" % d["machine_id"], prefix + "highwater/%d" % d["machine_id"])]
            if keys:
                if (prefix + "machines/%d" % d["machine_id"], "DELETE") in keys and len(keys) == 1:
                    d["then_machines_deleted_at"] = rev
                break
    return {"highwater_writes": hw_writes, "holder_writes": holder_puts, "decreases": decreases,
            "releases": releases, "bad_releases": bad_releases, "last_highwater": last_hw,
            "revisions": (min(by_rev), max(by_rev)) if by_rev else None}


def release_floor(ts, who):
    """The highest cursor returned for the machine id up to and including `who`'s last tenure, or
    None when `who` never returned one (then nothing is known about its issue)."""
    idx = max((i for i, t in enumerate(ts) if t[0] == who), default=None)
    if idx is None:
        return None
    return max(t[4] for t in ts[:idx + 1])


def check(results, prefix="/zaptid/"):
    client_logs = sorted(glob.glob(os.path.join(results, "clients", "*.log")))
    calls, runs = parse_calls(client_logs)
    out = {"calls": len(calls), "calls_ok": sum(1 for c in calls if c[4] == "OK"),
           "ids_recorded": sum(c[5] for c in calls)}
    dup, cross, dup_ex = find_duplicates(runs)
    out.update(duplicates=dup, duplicates_across_servers=cross, duplicate_examples=dup_ex)
    ov, ov_ex = order_violations(runs)
    out.update(holder_order_violations=ov, holder_order_examples=ov_ex)
    tens = tenures(runs)
    out["tenures"] = {str(mid): len(ts) for mid, ts in sorted(tens.items())}
    max_cursor = {mid: max(t[4] for t in ts) for mid, ts in tens.items()}

    live = glob.glob(os.path.join(results, "watch*.jsonl"))
    replay = glob.glob(os.path.join(results, "replay*.jsonl"))
    events = parse_watch(live + replay)
    live_events = parse_watch(live)
    replay_events = parse_watch(replay)
    exits = {}
    inst_path = os.path.join(results, "instances.json")
    if os.path.exists(inst_path):
        with open(inst_path) as f:
            exits = {i["address"]: i.get("exit") for i in json.load(f)}
    w = watch_checks(events, prefix, tens, exits)
    out["watch"] = {"events": len(events), "live_events": len(live_events), "replay_events": len(replay_events),
                    "missed_by_live_watcher": len(set(replay_events) - set(live_events)) if replay_events else None,
                    "revisions": w["revisions"], "highwater_writes": w["highwater_writes"],
                    "holder_writes": w["holder_writes"]}
    out["highwater_decreases"] = len(w["decreases"])
    out["highwater_decreases_two_step_release"] = sum(1 for d in w["decreases"] if "then_machines_deleted_at" in d)
    # The ones that matter most first: not followed by a release.
    out["highwater_decrease_examples"] = sorted(w["decreases"], key=lambda d: "then_machines_deleted_at" in d)[:30]
    out["clean_releases"] = w["releases"]
    out["bad_releases"] = w["bad_releases"]

    final_path = os.path.join(results, "final.json")
    final_problems = []
    if os.path.exists(final_path):
        with open(final_path) as f:
            final = json.load(f)
        for stage, hw in final.items():
            for mid, top in max_cursor.items():
                v = hw.get(str(mid))
                if v is None or v < top:
                    final_problems.append({"stage": stage, "machine_id": mid, "highwater": v, "returned_max": top})
    out["final_below_returned"] = final_problems
    out["ok"] = not (dup or ov or w["decreases"] or w["bad_releases"] or final_problems)
    return out, calls, runs


def window_stats(calls, t0, t1, addr=None):
    sel = [c for c in calls if t0 <= c[0] < t1 and (addr is None or c[2] == addr)]
    st = collections.Counter(c[4] for c in sel)
    return {"calls": len(sel), "ok": st.get("OK", 0), "ids": sum(c[5] for c in sel),
            "ok_share": round(st.get("OK", 0) / len(sel), 3) if sel else None,
            "errors": {k: v for k, v in st.items() if k != "OK"}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--prefix", default="/zaptid/")
    p.add_argument("--json")
    a = p.parse_args()
    out, _, _ = check(a.results, a.prefix)
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
