import pytest

from shared.domain.versioning import Bump, bump_for_message, bump_for_messages, next_version


@pytest.mark.parametrize(
    ("message", "bump"),
    [
        ("fix: a bug", Bump.PATCH),
        ("fix(parser): a bug", Bump.PATCH),
        ("feat: a feature", Bump.MINOR),
        ("feat(ui): a feature", Bump.MINOR),
        ("Feat: capitalised type", Bump.MINOR),
        ("feat!: remove the old API", Bump.MAJOR),
        ("fix(api)!: change a response", Bump.MAJOR),
        ("chore: tidy\n\nBREAKING CHANGE: the config moved", Bump.MAJOR),
        ("docs: BREAKING-CHANGE: footer style", Bump.PATCH),
        ("refactor: x\n\nBREAKING-CHANGE: renamed", Bump.MAJOR),
        ("chore: dependencies", Bump.PATCH),
        ("Merge branch 'develop'", Bump.PATCH),
        ("featuring: not a type", Bump.PATCH),
        ("feat:no space is not conventional", Bump.PATCH),
    ],
)
def test_a_conventional_commit_asks_for_its_bump(message: str, bump: Bump) -> None:
    assert bump_for_message(message) is bump


def test_the_largest_bump_among_the_messages_wins() -> None:
    assert bump_for_messages(["fix: a", "feat: b", "chore: c"]) is Bump.MINOR
    assert bump_for_messages(["fix: a", "feat!: b"]) is Bump.MAJOR
    assert bump_for_messages([]) is Bump.PATCH


def test_the_first_release_takes_the_configured_first_version() -> None:
    assert next_version([], "1.0.0", ["feat!: anything"]) == "1.0.0"
    assert next_version([], "0.1.0", []) == "0.1.0"


def test_feat_bumps_minor_and_fix_bumps_patch() -> None:
    assert next_version(["1.0.0"], "1.0.0", ["feat: x"]) == "1.1.0"
    assert next_version(["1.1.0", "1.0.0"], "1.0.0", ["fix: x"]) == "1.1.1"
    assert next_version(["1.1.1"], "1.0.0", ["feat!: x"]) == "2.0.0"


def test_an_explicit_bump_overrides_the_messages() -> None:
    assert next_version(["1.4.2"], "1.0.0", ["feat!: x"], Bump.PATCH) == "1.4.3"
    assert next_version(["1.4.2"], "1.0.0", ["fix: x"], Bump.MAJOR) == "2.0.0"


def test_bumps_start_from_the_highest_version_ever_released_not_semver_text_order() -> None:
    # After a rollback to 1.9.0 the next feature still moves past 1.10.0.
    assert next_version(["1.9.0", "1.10.0", "1.2.0"], "1.0.0", ["feat: x"]) == "1.11.0"
