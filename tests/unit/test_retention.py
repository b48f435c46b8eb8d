"""Retention planning (pure) and applying a plan to a local store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from siprec_backup.catalog import CatalogEntry, list_backups
from siprec_backup.errors import ConfigurationError
from siprec_backup.manifest import Manifest, StoredObject, backup_prefix
from siprec_backup.retention import (
    RetentionPlan,
    RetentionPolicy,
    apply_retention,
    plan_retention,
)
from siprec_backup.storage import LocalStore

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _id(moment: datetime, n: int = 0) -> str:
    return f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"


def _manifest(
    backup_id: str, finished: datetime, depends_on: list[str] | None = None, source: str = "db"
) -> Manifest:
    return Manifest(
        backup_id=backup_id,
        cluster="lab",
        source=source,
        source_kind="recordings" if depends_on else "postgres",
        started_at=finished - timedelta(minutes=5),
        finished_at=finished,
        object=StoredObject(
            key=backup_prefix("p", "lab", source, backup_id) + "data.sbk",
            plaintext_bytes=10,
            plaintext_sha256="a" * 64,
            ciphertext_bytes=100,
            ciphertext_sha256="b" * 64,
            compression="zstd",
            chunk_size=1 << 20,
            key_id="k1",
        ),
        depends_on=depends_on or [],
        tool_version="0.1.0",
    )


def _complete(
    finished: datetime, depends_on: list[str] | None = None, n: int = 0, source: str = "db"
) -> CatalogEntry:
    manifest = _manifest(_id(finished, n), finished, depends_on, source)
    return CatalogEntry(
        "lab", source, manifest.backup_id, "complete", 100, finished, manifest, modified=finished
    )


def _incomplete(started: datetime, idle_since: datetime | None = None, n: int = 0) -> CatalogEntry:
    return CatalogEntry(
        "lab", "db", _id(started, 0xF00 + n), "incomplete", 50, None, None, modified=idle_since
    )


def _kept(plan: RetentionPlan) -> set[str]:
    return {d.backup_id for d in plan.to_keep}


def _reasons(plan: RetentionPlan, backup_id: str) -> tuple[str, ...]:
    return next(d.reasons for d in plan.decisions if d.backup_id == backup_id)


def test_policy_that_keeps_nothing_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="the policy keeps nothing"):
        RetentionPolicy.build(max_age_days=30)
    with pytest.raises(ConfigurationError, match="keep_daily: Input should be greater than"):
        RetentionPolicy.build(keep_last=1, keep_daily=-1)
    with pytest.raises(ConfigurationError, match="incomplete_after_hours"):
        RetentionPolicy.build(keep_last=1, incomplete_after_hours=0)
    assert (
        RetentionPolicy.build(keep_daily=7).describe() == "keep_daily=7 incomplete_after_hours=24"
    )


def test_keep_last_keeps_the_newest_ones() -> None:
    entries = [_complete(NOW - timedelta(hours=h)) for h in range(5)]
    plan = plan_retention(entries, RetentionPolicy(keep_last=2), NOW)
    newest, second = entries[0].backup_id, entries[1].backup_id
    assert _kept(plan) == {newest, second}
    assert _reasons(plan, newest) == ("newest complete", "last 1")
    assert _reasons(plan, second) == ("last 2",)
    assert _reasons(plan, entries[4].backup_id) == ("no keep rule selects it",)
    assert plan.summary().startswith("2 kept, 3 to delete (300 bytes)")


def _history_with_gap() -> list[CatalogEntry]:
    """Backups at 01:00 and 02:00 UTC every day from 1 Sep to 26 Nov 2026, except 14-23 Nov."""
    entries = []
    day = datetime(2026, 9, 1, tzinfo=UTC)
    while day <= NOW:
        if not datetime(2026, 11, 14, tzinfo=UTC) <= day < datetime(2026, 11, 24, tzinfo=UTC):
            entries += [_complete(day.replace(hour=h)) for h in (1, 2)]
        day += timedelta(days=1)
    return entries


def _selected(plan: RetentionPlan, rule: str) -> dict[str, str]:
    """{period: finished_at} for the backups `rule` (daily, weekly...) selected."""
    return {
        reason.split()[1]: f"{d.finished_at:%m-%d %H}"
        for d in plan.to_keep
        for reason in d.reasons
        if reason.startswith(rule + " ")
    }


def test_daily_weekly_monthly_take_the_newest_of_each_period_with_backups() -> None:
    entries = _history_with_gap()
    # Periods without backups do not count: the 5 days are 26, 25, 24, then 13 and 12 Nov.
    daily = plan_retention(entries, RetentionPolicy(keep_daily=5), NOW)
    assert _selected(daily, "daily") == {
        "2026-11-26": "11-26 02",
        "2026-11-25": "11-25 02",
        "2026-11-24": "11-24 02",
        "2026-11-13": "11-13 02",
        "2026-11-12": "11-12 02",
    }
    assert len(daily.to_keep) == 5
    # ISO week 47 (16-22 Nov) has no backup; W45's newest is Sunday 8 Nov.
    weekly = plan_retention(entries, RetentionPolicy(keep_weekly=3), NOW)
    assert _selected(weekly, "weekly") == {
        "2026-W48": "11-26 02",
        "2026-W46": "11-13 02",
        "2026-W45": "11-08 02",
    }
    monthly = plan_retention(entries, RetentionPolicy(keep_monthly=12), NOW)
    assert _selected(monthly, "monthly") == {
        "2026-11": "11-26 02",
        "2026-10": "10-31 02",
        "2026-09": "09-30 02",
    }
    # Rules combine: a backup is kept if any rule selects it, with every reason listed.
    both = plan_retention(entries, RetentionPolicy(keep_last=1, keep_daily=2, keep_monthly=2), NOW)
    newest = max(entries, key=lambda e: e.backup_id).backup_id
    assert _reasons(both, newest) == (
        "newest complete",
        "last 1",
        "daily 2026-11-26",
        "monthly 2026-11",
    )
    assert len(both.to_keep) == 3


def test_max_age_is_an_upper_bound_on_what_rules_keep() -> None:
    entries = [_complete(NOW - timedelta(days=d)) for d in range(0, 60, 10)]
    plan = plan_retention(entries, RetentionPolicy(keep_last=6, max_age_days=25), NOW)
    assert _kept(plan) == {e.backup_id for e in entries[:3]}  # 0, 10, 20 days old
    assert _reasons(plan, entries[4].backup_id) == ("older than 25 days",)


def test_newest_complete_is_kept_even_when_too_old() -> None:
    entries = [_complete(NOW - timedelta(days=d)) for d in (400, 500)]
    plan = plan_retention(entries, RetentionPolicy(keep_last=1, max_age_days=30), NOW)
    assert _kept(plan) == {entries[0].backup_id}
    assert _reasons(plan, entries[0].backup_id) == ("newest complete (always kept)",)


def test_bases_of_kept_backups_are_kept_transitively() -> None:
    full = _complete(NOW - timedelta(days=40))
    inc1 = _complete(NOW - timedelta(days=30), [full.backup_id])
    inc2 = _complete(NOW - timedelta(days=1), [inc1.backup_id, full.backup_id])
    other = _complete(NOW - timedelta(days=35))
    plan = plan_retention(
        [full, inc1, inc2, other], RetentionPolicy(keep_last=1, max_age_days=7), NOW
    )
    assert _kept(plan) == {full.backup_id, inc1.backup_id, inc2.backup_id}
    assert f"base of kept {inc2.backup_id}" in _reasons(plan, inc1.backup_id)
    assert [d.backup_id for d in plan.to_delete] == [other.backup_id]


def test_missing_base_is_reported() -> None:
    inc = _complete(NOW, ["20261101T000000Z-gone00"])
    plan = plan_retention([inc], RetentionPolicy(keep_last=1), NOW)
    assert plan.warnings == (
        f"lab/db backup {inc.backup_id} depends on 20261101T000000Z-gone00, which is not in the "
        "store",
    )


def test_incomplete_backups_never_count_and_are_removed_when_idle() -> None:
    done = _complete(NOW - timedelta(days=3))
    running = _incomplete(NOW - timedelta(hours=30), idle_since=NOW - timedelta(minutes=5))
    dead = _incomplete(NOW - timedelta(hours=30), n=1)  # no object times: the id's time counts
    plan = plan_retention([done, running, dead], RetentionPolicy(keep_last=1), NOW)
    assert _kept(plan) == {done.backup_id, running.backup_id}
    assert _reasons(plan, running.backup_id) == ("incomplete for 0.1h: may still be running",)
    assert _reasons(plan, dead.backup_id) == ("incomplete (interrupted) for 30.0h, more than 24h",)
    # keep_last=1 is satisfied by the complete backup, not by a newer incomplete one
    assert "last 1" in _reasons(plan, done.backup_id)


def test_sources_are_planned_independently() -> None:
    a = [_complete(NOW - timedelta(days=d), source="a") for d in range(3)]
    b = [_complete(NOW - timedelta(days=100 + d), source="b") for d in range(3)]
    plan = plan_retention(a + b, RetentionPolicy(keep_last=1), NOW)
    assert _kept(plan) == {a[0].backup_id, b[0].backup_id}


def test_naive_now_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="aware"):
        plan_retention([], RetentionPolicy(keep_last=1), NOW.replace(tzinfo=None))


def _random_history(rng: random.Random) -> list[CatalogEntry]:
    entries: list[CatalogEntry] = []
    moment = NOW - timedelta(days=rng.randint(1, 400))
    complete_ids: list[str] = []
    for n in range(rng.randint(0, 40)):
        moment += timedelta(hours=rng.choice([1, 6, 24, 24, 24, 72, 200]))
        if moment > NOW:
            break
        if rng.random() < 0.15:
            entries.append(
                CatalogEntry(
                    "lab", "db", _id(moment, n), "incomplete", 7, None, None, modified=moment
                )
            )
            continue
        depends = []
        if complete_ids and rng.random() < 0.5:
            depends = rng.sample(complete_ids, k=min(len(complete_ids), rng.randint(1, 2)))
        entry = _complete(moment, depends, n)
        entries.append(entry)
        complete_ids.append(entry.backup_id)
    rng.shuffle(entries)
    return entries


@pytest.mark.parametrize("seed", range(300))
def test_invariants_over_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    entries = _random_history(rng)
    policy = RetentionPolicy(
        keep_last=rng.randint(0, 3),
        keep_daily=rng.randint(0, 5),
        keep_weekly=rng.randint(0, 3),
        keep_monthly=rng.choice([0, 1, 6]) or 1,
        max_age_days=rng.choice([None, 1, 30, 90]),
        incomplete_after_hours=rng.choice([1, 24]),
    )
    plan = plan_retention(entries, policy, NOW)
    assert sorted(d.backup_id for d in plan.decisions) == sorted(e.backup_id for e in entries)
    kept = _kept(plan)
    complete = [e for e in entries if e.status == "complete" and e.finished_at]
    if complete:
        newest = max(complete, key=lambda e: (e.finished_at, e.backup_id))
        assert newest.backup_id in kept
    by_id = {e.backup_id: e for e in entries}
    for backup_id in kept:
        manifest = by_id[backup_id].manifest
        for base in manifest.depends_on if manifest else ():
            assert base in kept, f"base {base} of kept {backup_id} deleted"
    for decision in plan.decisions:
        assert decision.reasons
        if decision.status == "incomplete":
            assert not any(
                r.startswith(("last", "daily", "weekly", "monthly")) for r in decision.reasons
            )
    # keep_last counts complete backups only
    if policy.keep_last and not policy.max_age_days:
        newest_n = sorted(complete, key=lambda e: (e.finished_at, e.backup_id))[-policy.keep_last :]
        assert {e.backup_id for e in newest_n} <= kept


def test_apply_deletes_manifest_first_and_every_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    old, new = (_manifest(_id(NOW - timedelta(days=d)), NOW - timedelta(days=d)) for d in (2, 1))
    for manifest in (old, new):
        base = backup_prefix("p", "lab", "db", manifest.backup_id)
        store.put_bytes(base + "data.sbk", b"x" * 100)
        store.put_bytes(base + "audio/0001.sbk", b"y" * 10)
        store.put_bytes(base + "manifest.json", manifest.to_json())
    entries = list_backups(store, "p")
    assert [e.status for e in entries] == ["complete", "complete"]

    deleted_keys: list[str] = []

    class Recording(LocalStore):
        def delete(self, key: str) -> None:
            deleted_keys.append(key)
            super().delete(key)

    plan = plan_retention(entries, RetentionPolicy(keep_last=1), NOW)
    assert apply_retention(Recording(tmp_path), "p", plan) == [old.backup_id]
    base = backup_prefix("p", "lab", "db", old.backup_id)
    assert deleted_keys[0] == base + "manifest.json"
    assert sorted(deleted_keys[1:]) == [base + "audio/0001.sbk", base + "data.sbk"]
    assert [e.backup_id for e in list_backups(store, "p")] == [new.backup_id]


def test_half_deleted_backup_shows_as_incomplete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manifests = [_manifest(_id(NOW - timedelta(days=d)), NOW - timedelta(days=d)) for d in (2, 1)]
    for manifest in manifests:
        base = backup_prefix("p", "lab", "db", manifest.backup_id)
        store.put_bytes(base + "data.sbk", b"x" * 100)
        store.put_bytes(base + "manifest.json", manifest.to_json())

    class Crashing(LocalStore):
        def delete(self, key: str) -> None:
            super().delete(key)
            if key.endswith("manifest.json"):
                raise KeyboardInterrupt  # killed right after the manifest went

    plan = plan_retention(list_backups(store, "p"), RetentionPolicy(keep_last=1), NOW)
    with pytest.raises(KeyboardInterrupt):
        apply_retention(Crashing(tmp_path), "p", plan)
    statuses = {e.backup_id: e.status for e in list_backups(store, "p")}
    assert statuses == {manifests[0].backup_id: "incomplete", manifests[1].backup_id: "complete"}
    # the next run removes the leftover once it has idled long enough
    later = datetime.now(UTC) + timedelta(days=2)
    plan = plan_retention(list_backups(store, "p"), RetentionPolicy(keep_last=1), later)
    assert apply_retention(store, "p", plan) == [manifests[0].backup_id]
