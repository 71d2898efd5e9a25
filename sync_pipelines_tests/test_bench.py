"""The benchmark's report on a small sync: its shape and that its counts agree (issue: performance and scale).
No timing is asserted here; the figures are for people to read."""

from __future__ import annotations

import json

import pytest

from sync_pipelines.bench import TARGETS, main, run_bench
from sync_pipelines.stack import load_stack


@pytest.fixture(scope="module")
def report():
    return run_bench(2000, change_fraction=0.01, load_rows=500)


def test_every_run_succeeds_and_times_every_step(report):
    assert 1 <= len(report["catch_up"]) <= 3
    written = [sum(step["written"] or 0 for step in run["steps"]) for run in (report["full"], *report["catch_up"])]
    assert written[0] > 0 and (written[-1] == 0 or len(report["catch_up"]) == 3)  # caught up before the edit
    for figures in (report["full"], *report["catch_up"], report["incremental"]):
        assert figures["success"]
        steps = {step["step"]: step for step in figures["steps"]}
        assert "staged_contacts" in steps and "golden_contacts" in steps
        assert all(step["ok"] and step["wall_s"] >= 0 and step["cpu_s"] >= 0 for step in steps.values())
        assert figures["wall_s"] >= sum(step["wall_s"] for step in steps.values()) * 0.99
        assert figures["peak_rss_mib"] > 0


def test_counts_agree_with_the_sandbox(report):
    assert report["source_records"] == sum(report["streams"].values())
    assert 1000 <= report["source_records"] <= 4000  # about the size asked for
    full = report["full"]["stages"]
    # a full read sees every record once, but for deletions some APIs no longer list (Stripe, HubSpot's archive); a
    # stream that re-reads another (the ERP export read for companies too) reads that one's records again
    read = sum(report["streams"][f"{tool}/{spec.reads or stream}"] for tool, _, stream, spec in load_stack().streams())
    assert 0.95 * read <= full["extract"]["records"] <= read
    extracted = {s["step"]: s["records"] for s in report["full"]["steps"] if s["stage"] == "extract"}
    assert len(extracted) == len(report["streams"])
    contacts = sum(n for key, n in report["streams"].items() if key in (
        "salesforce/Contact", "hubspot/contacts", "zendesk/users", "stripe/customers", "legacy_erp/customers"))
    steps = {s["step"]: s["records"] for s in report["full"]["steps"]}
    assert 0 < steps["staged_contacts"] <= contacts  # every landed row is read once
    assert 0 < steps["golden_contacts"] < steps["staged_contacts"]  # deleted and invalid records are not staged
    assert 0 < report["golden_records"]["contacts"] < steps["golden_contacts"]  # duplicates across tools merged
    assert set(report["golden_records"]) == set(report["core"])  # every resolved entity is counted
    for entity, count in report["golden_records"].items():
        assert 0 < count <= steps[f"golden_{entity}"], entity
    # timed on what the last run left staged: the first run's records, and the members its write-back created in
    # the audience (read back by the next run), who are already golden records
    created = report["full"]["steps"]
    made = sum(step["written"] or 0 for step in created if step["step"] == "mailchimp__contacts_writeback")
    assert report["core"]["contacts"]["records"] <= steps["golden_contacts"] + made
    assert report["core"]["contacts"]["records"] >= steps["golden_contacts"]
    # every resolved entity is in the stage totals
    assert full["golden"]["records"] == sum(n for step, n in steps.items() if step.startswith("golden_") and n)


def test_the_incremental_run_reads_and_rebuilds_only_what_changed(report):
    assert report["edited_records"] == pytest.approx(0.01 * report["source_records"], abs=8)
    full, incremental = report["full"]["stages"], report["incremental"]["stages"]
    assert report["edited_records"] <= incremental["extract"]["records"] < full["extract"]["records"] / 2
    for stage in ("staged", "golden", "write-back"):  # each step after extraction works on the changed part only
        assert incremental[stage]["records"] < full[stage]["records"] / 2, stage


def test_every_target_is_judged_against_its_figure(report):
    targets = report["targets"]
    assert set(TARGETS) <= set(targets)
    assert targets["full_sync_seconds_at_1m"]["met"] is None  # too small a run to judge the 1M target
    assert targets["incremental_share_of_full"]["value"] == round(
        report["incremental"]["wall_s"] / report["full"]["wall_s"], 3)
    assert report["load"]["rows"] == 500 and report["load"]["land_insert_rows_per_s"] > 0
    by_stream = report["extraction_cpu_ms_per_1000_records_by_stream"]  # every stream that read a record
    extracted = [s for s in report["full"]["steps"] if s["stage"] == "extract" and s["records"]]
    assert set(by_stream) == {s["step"] for s in extracted} and all(ms > 0 for ms in by_stream.values())
    step = extracted[0]
    assert by_stream[step["step"]] == round(1_000_000 * step["process_cpu_s"] / step["records"], 1)
    reference = report["machine_reference"]  # the machine's speed before and after, to compare runs taken apart
    assert 0 < reference["before_s"] < 60 and 0 < reference["after_s"] < 60
    json.dumps(report)  # the report is plain JSON


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="records must be positive"):
        run_bench(0)
    with pytest.raises(ValueError, match="change_fraction"):
        run_bench(100, change_fraction=2)


def test_the_command_line_writes_the_json_report(tmp_path, monkeypatch, report):
    monkeypatch.setattr("sync_pipelines.bench.run_bench", lambda *args, **kwargs: report)
    out = tmp_path / "bench.json"
    main(["--records", "2000", "--json", str(out)])
    assert json.loads(out.read_text())["source_records"] == report["source_records"]


def test_on_postgresql_the_bench_works_in_a_schema_of_its_own_and_drops_it():
    """Given a real database, the bench must neither touch its tables nor leave any of its own behind."""
    import sqlalchemy as sa

    from sync_pipelines_tests.conftest import POSTGRES_URL

    engine = sa.create_engine(POSTGRES_URL)
    schemas = "SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, 'sync_bench_')"
    # other tests' schemas (t_…, see conftest) come and go meanwhile when tests run in parallel
    tables = ("SELECT table_schema, table_name FROM information_schema.tables "
              "WHERE NOT starts_with(table_schema, 't_')")
    with engine.connect() as conn:
        before = set(conn.exec_driver_sql(tables).all())
    figures = run_bench(300, POSTGRES_URL, load_rows=1000)
    with engine.connect() as conn:
        assert conn.exec_driver_sql(schemas).scalar() == 0
        assert set(conn.exec_driver_sql(tables).all()) == before
    engine.dispose()
    assert figures["warehouse"] == "postgresql" and figures["full"]["success"] and figures["load"]["rows"] == 1000
