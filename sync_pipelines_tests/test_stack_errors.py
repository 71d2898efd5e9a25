"""Stack errors all at once (issue 14, item 2): every problem of a file in one report, one line each with the file,
the key path, the value found, what is allowed and a suggestion for a near miss; cron fields checked one by one."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from sync_pipelines.cli import main
from sync_pipelines.stack import DEFAULT_STACK, Nightly, StackError, load_stack


def _write(tmp_path: Path, *mutations) -> Path:
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    for mutate in mutations:
        mutate(raw)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


FIVE_MISTAKES = (
    lambda r: r["tools"]["hubspot"].update(kind="hubspott"),
    lambda r: r["tools"]["salesforce"]["streams"]["Contact"]["fields"][0].update(transforms=["lowr"]),
    lambda r: r["nightly"].update(cron="0 25 * * *"),
    lambda r: r["survivorship"]["contacts"].update(source_of_truth="salesfroce"),
    lambda r: r["quality"]["contacts"]["expectations"].append({"expect": "not_nul", "column": "email"}),
)


def test_five_mistakes_are_five_lines_of_one_report(tmp_path):
    file = _write(tmp_path, *FIVE_MISTAKES)
    with pytest.raises(StackError) as info:
        load_stack(file)
    # in the order pydantic meets them; the tool refused for its kind (hubspot) is named elsewhere too (survivorship,
    # destinations, integrations): no more lines, and the valid tools only are offered
    assert str(info.value).splitlines() == [f"{file}: at {path}: {problem}" for path, problem in [
        ("nightly.cron", "found '0 25 * * *'; hour 25 is out of range 0-23"),
        ("tools.salesforce.streams.Contact.fields[0].transforms[0]",
         "found 'lowr'; allowed: 'trim', 'lower', 'upper', 'title', 'snake', 'first_word', 'rest_words', 'domain', "
         "'email_domain', 'phone_e164', 'name_key' or 'utc'; did you mean 'lower'?"),
        ("tools.hubspot.kind", "found 'hubspott'; allowed: 'salesforce', 'hubspot', 'zendesk', 'asana', 'stripe', "
                               "'slack', 'csv', 'sql' or 'rest'; did you mean 'hubspot'?"),
        ("survivorship.contacts.source_of_truth", "unknown tool: 'salesfroce'; allowed: asana, jira, legacy_erp, "
                                                  "mailchimp, salesforce, slack, stripe, zendesk; did you mean "
                                                  "'salesforce'?"),
        ("quality.contacts.expectations[5]", "unknown expect 'not_nul'; allowed: between, in_set, match_regex, "
                                             "max_length, not_null, unique; did you mean 'not_null'?"),
    ]]
    assert (info.value.path, info.value.problem) == info.value.problems[0]  # the single-problem attributes still work


def test_the_cli_prints_the_whole_report_unwrapped_with_exit_2_and_no_traceback(tmp_path):
    file = _write(tmp_path, *FIVE_MISTAKES)
    for command in (["validate", str(file)], ["plan"], ["sync"]):
        result = CliRunner(env={"SYNC_STACK": str(file)}).invoke(main, command)
        lines = result.output.splitlines()
        assert result.exit_code == 2 and lines[0] == f"invalid stack file {file}: 5 problems", result.output
        assert len(lines) == 6 and all(line.startswith(f"{file}: at ") for line in lines[1:]), result.output
        assert "did you mean 'lower'?" in lines[2] and "Traceback" not in result.output


def test_a_single_problem_stays_one_line():
    result = CliRunner().invoke(main, ["validate", "no/such/stack.yaml"])
    assert result.exit_code == 2
    assert result.output == "invalid stack file no/such/stack.yaml: at <top>: file not found (set SYNC_STACK to a " \
                            "stack file)\n"


@pytest.mark.parametrize(
    "mutate, path, suggestion",
    [
        (lambda r: r["tools"]["asana"].update(kind="asanna"), "tools.asana.kind", "asana"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][0].update(transforms=["trm"]),
         "tools.hubspot.streams.contacts.fields[0].transforms[0]", "trim"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][1].update(to="firstname"),
         "tools.hubspot.streams.contacts.fields[1].to", "first_name"),
        (lambda r: r["tools"]["zendesk"].update(ratelimit={"requests": 1, "per_seconds": 1}),
         "tools.zendesk.ratelimit", "rate_limit"),
        (lambda r: r["survivorship"]["contacts"]["priority"].insert(0, "hubspto"),
         "survivorship.contacts.priority[0]", "hubspot"),
        (lambda r: r["tools"]["zendesk"]["streams"]["users"].update(entity="contact"),
         "tools.zendesk.streams.users.entity", "contacts"),
        (lambda r: r["destinations"][1].update(stream="contactz"), "destinations[1].stream", "contacts"),
        (lambda r: r["identity"]["contacts"]["rules"][0]["conditions"][0].update(method="jaro_winklr"),
         "identity.contacts.rules[0].conditions[0].method", "jaro_winkler"),
        (lambda r: r["quality"]["contacts"]["expectations"].append({"expect": "uniqe", "column": "email"}),
         "quality.contacts.expectations[5]", "unique"),
        (lambda r: r["quality"]["contacts"]["expectations"].append({"expect": "unique", "column": "emial"}),
         "quality.contacts.expectations[5].column", "email"),
        (lambda r: r["identity"]["contacts"]["rules"][1].update(blocking=["phoen"]),
         "identity.contacts.rules[1].blocking[0]", "phone"),
        (lambda r: r["actions"][0]["create"].update(tool="strpe"), "actions[0].create.tool", "stripe"),
        (lambda r: r["actions"][0]["when"].update(kind="chnges"), "actions[0].when.kind", "changes"),
    ],
)
def test_every_near_miss_gets_its_suggestion(tmp_path, mutate, path, suggestion):
    with pytest.raises(StackError) as info:
        load_stack(_write(tmp_path, mutate))
    assert info.value.problems == [(path, info.value.problem)], str(info.value)
    assert info.value.problem.endswith(f"; did you mean {suggestion!r}?")


def test_a_refused_list_item_leaves_the_others_their_place_in_the_file(tmp_path):
    file = _write(tmp_path, lambda r: r["destinations"][0].pop("tool"),
                  lambda r: r["destinations"][2].update(stream="userz"))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert [path for path, _ in info.value.problems] == ["destinations[0].tool", "destinations[2].stream"]


def test_a_refused_first_day_or_union_value_is_one_line_and_hides_no_other_problem(tmp_path):
    file = _write(tmp_path, lambda r: r.update(start_date="2026-13-01"),
                  lambda r: r["tools"]["hubspot"]["streams"]["contacts"].update(deleted_value=[1]),
                  lambda r: r["identity"]["contacts"]["rules"][0]["conditions"][0].update(field="emial"))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert info.value.problems == [
        ("start_date", "found '2026-13-01'; must be a day written YYYY-MM-DD, e.g. '2026-09-01'"),
        ("tools.hubspot.streams.contacts.deleted_value",
         "Input should be a valid string or Input should be a valid boolean"),
        ("identity.contacts.rules[0].conditions[0].field",
         "unknown field: 'emial'; allowed: company_name, company_source_id, email, first_name, job_title, last_name, "
         "lifecycle_stage, phone; did you mean 'email'?"),
    ]


def test_a_refused_variable_and_the_other_mistakes_are_reported_together(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_RATE", raising=False)
    file = _write(tmp_path, lambda r: r["tools"]["legacy_erp"].update(rate_limit={"requests": "${NO_SUCH_RATE}",
                                                                                  "per_seconds": 1}),
                  lambda r: r["actions"][1]["create"]["fields"].update(notes="${HOME}"),
                  lambda r: r["nightly"].update(cron="0 2 * * 9"))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert [path for path, _ in info.value.problems] == [
        "nightly.cron", "tools.legacy_erp.rate_limit.requests", "actions[1].create.fields.notes"]


def test_a_secret_pasted_as_a_tool_kind_is_not_echoed(tmp_path):
    with pytest.raises(StackError) as info:
        load_stack(_write(tmp_path, lambda r: r["tools"]["stripe"].update(kind="sk_live_51H-secret")))
    assert info.value.problem.startswith("allowed: 'salesforce'") and "sk_live" not in str(info.value)


@pytest.mark.parametrize(
    "cron, problem",
    [
        ("60 2 * * *", "minute 60 is out of range 0-59"),
        ("0 25 * * *", "hour 25 is out of range 0-23"),
        ("0 2 0 * *", "day of month 0 is out of range 1-31"),
        ("0 2 32 * *", "day of month 32 is out of range 1-31"),
        ("0 2 * 13 *", "month 13 is out of range 1-12"),
        ("0 2 * 0 *", "month 0 is out of range 1-12"),
        ("0 2 * * 8", "day of week 8 is out of range 0-7"),
        ("0-60/5 2 * * *", "minute 60 is out of range 0-59"),
        ("0 2,24 * * *", "hour 24 is out of range 0-23"),
        ("*/0 2 * * *", "minute step '0'; allowed: a whole number of 1 or more"),
        ("0 2 * jnu *", "month 'jnu' is not a number; allowed: 1-12 or jan, feb, mar, apr, may, jun, jul, aug, sep, "
                        "oct, nov, dec; did you mean 'jun'?"),
        ("99 99 * * *", "minute 99 is out of range 0-59; hour 99 is out of range 0-23"),
        ("0 2 30 2 *", "day of month 30 never comes in February; allowed: 1-29 in month 2"),
        ("every night", "2 fields; allowed: 5 fields (minute hour day-of-month month day-of-week), e.g. '0 2 * * *'"),
    ],
)
def test_each_cron_field_is_checked_against_its_range(cron, problem):
    with pytest.raises(ValidationError) as info:
        Nightly(cron=cron)
    assert str(info.value.errors()[0]["ctx"]["error"]).startswith(problem)


@pytest.mark.parametrize("cron", ["0 2 * * *", "*/15 * * * *", "0-30/5 8-18 * * mon-fri", "0 0 1 jan,jul *",
                                  "59 23 31 12 7", "0 0 * * 0", "0 6 1-15/2 * SUN", "@daily"])
def test_valid_cron_forms_are_still_accepted(cron):
    assert Nightly(cron=cron).cron == cron


def test_the_report_follows_the_order_of_the_file(tmp_path):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["survivorship"]["contacts"]["source_of_truth"] = "salesfroce"  # found after pydantic's checks
    raw["tools"]["asana"]["kind"] = "asanna"
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump({"survivorship": raw.pop("survivorship"), **raw}, sort_keys=False))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert [path for path, _ in info.value.problems] == ["survivorship.contacts.source_of_truth", "tools.asana.kind"]


def test_the_readme_shows_the_real_report(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    shown = readme.split("$ sync-pipelines validate stack.yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, lambda r: r["nightly"].update(cron="0 25 * * *"),
           lambda r: r["tools"]["asana"].update(kind="asanna"),
           lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][1].update(to="firstname"),
           lambda r: r["tools"]["salesforce"]["streams"]["Contact"]["fields"][0].update(transforms=["lowr"]),
           lambda r: r["quality"]["contacts"]["expectations"].append({"expect": "not_nul", "column": "email"}))
    assert CliRunner().invoke(main, ["validate", "stack.yaml"]).output == shown
