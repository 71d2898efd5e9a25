"""Stack files that YAML accepts but that would never finish loading."""

from pathlib import Path

import pytest
import yaml

from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack


def _sandbox() -> dict:
    return yaml.safe_load(DEFAULT_STACK.read_text())


def _refused(tmp_path: Path, text: str) -> str:
    file = tmp_path / "stack.yaml"
    file.write_text(text)
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert str(info.value).startswith(f"{file}: at ")
    return str(info.value)


def test_aliases_expanding_to_a_million_values_are_refused(tmp_path):
    levels = "abcdef"
    lines = [f"a: &a [{', '.join(['x'] * 10)}]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip(levels, levels[1:])]
    message = _refused(tmp_path, "\n".join(lines) + "\n")
    assert "refused at line 5, column 4: aliases expand this value to more than 100000 values" in message


def test_an_alias_inside_the_value_it_names_is_refused(tmp_path):
    assert "an alias inside the value it names" in _refused(tmp_path, "name: &a [*a]\n")


def test_small_aliases_and_merge_keys_still_load(tmp_path):
    raw = DEFAULT_STACK.read_text().replace(
        "  salesforce:\n    kind: salesforce\n", "  salesforce: &crm\n    kind: salesforce\n", 1,
    ).replace("  hubspot:\n    kind: hubspot\n", "  hubspot:\n    <<: *crm\n    kind: hubspot\n", 1)
    file = tmp_path / "stack.yaml"
    file.write_text(raw)
    assert load_stack(file).tools["hubspot"].owner == "team:marketing"  # its own keys win over the merged ones


def test_deep_nesting_is_a_stack_error(tmp_path):
    message = _refused(tmp_path, "name: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert "refused at line 1, column 106: nested deeper than 100 levels" in message


def test_an_integer_too_long_for_python_is_a_stack_error_without_its_digits(tmp_path):
    message = _refused(tmp_path, "tools:\n  s:\n    rate_limit: {requests: " + "7" * 5000 + "}\n")
    assert "an integer of 5000 characters; allowed: at most 4300 digits" in message and "7777" not in message


def test_a_file_over_a_mebibyte_is_refused_before_parsing(tmp_path):
    message = _refused(tmp_path, DEFAULT_STACK.read_text() + "# padding\n" * 120_000)
    assert "at <top>: larger than 1 MiB; allowed: at most 1048576 bytes" in message


def test_a_duplicate_key_among_many_is_still_refused(tmp_path):
    keys = "".join(f"  k{i}: {i}\n" for i in range(20_000))
    assert "line 20003, column 3: duplicate key 'k7'" in _refused(tmp_path, f"name: x\nentities:\n{keys}  k7: 0\n")
