"""`/aico …` as the parser reads it: which verb, what arguments, and what it tells a user who typed
something it cannot use. Pure functions; no Slack, no store."""

from __future__ import annotations

import pytest

from bot.parsing import (
    BUDGET_USAGE,
    HISTORY_DEFAULT,
    HISTORY_MAX,
    BudgetChange,
    Command,
    HistoryQuery,
    budget_change,
    history_query,
    parse,
)

# --------------------------------------------------------------------------- verbs


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", None])
def test_nothing_typed_is_help(text) -> None:
    # Given `/aico` with no text (Slack sends text=""), When parsed, Then it is a plain help.
    assert parse(text) == Command("help")


@pytest.mark.parametrize(
    ("text", "verb", "args"),
    [
        ("task fix the build", "task", "fix the build"),
        ("help", "help", ""),
        ("status", "status", ""),
        ("history", "history", ""),
        ("history 5", "history", "5"),
        ("history channel 20", "history", "channel 20"),
        ("show abc123defg", "show", "abc123defg"),
        ("cancel abc123defg", "cancel", "abc123defg"),
        ("retry abc123defg", "retry", "abc123defg"),
        ("budget", "budget", ""),
        ("budget user U123 25", "budget", "user U123 25"),
        ("budget channel 10", "budget", "channel 10"),
    ],
)
def test_every_verb_with_its_arguments(text: str, verb: str, args: str) -> None:
    command = parse(text)
    assert (command.verb, command.args) == (verb, args)


@pytest.mark.parametrize("text", ["TASK do it", "Task do it", "tAsK do it"])
def test_the_verb_is_case_insensitive_and_the_word_kept_as_typed(text: str) -> None:
    command = parse(text)
    assert command.verb == "task"
    assert command.args == "do it"
    assert command.word == text.split()[0]


def test_odd_spacing_around_and_after_the_verb_is_dropped() -> None:
    # Given leading blanks, several spaces and a newline between the verb and the task
    command = parse("   task  \n   write a haiku   ")
    # Then the verb is found and the task starts at its first word, without trailing blanks
    assert command == Command("task", "write a haiku", "task")


def test_the_task_text_keeps_its_inner_lines_and_spaces() -> None:
    text = "task Step 1:  build\nStep 2:\ttest\n\n```code  block```"
    assert parse(text).args == "Step 1:  build\nStep 2:\ttest\n\n```code  block```"


def test_a_verb_followed_by_a_newline_instead_of_a_space_still_counts() -> None:
    assert parse("task\nsummarise the thread") == Command("task", "summarise the thread", "task")


def test_a_task_verb_alone_has_empty_arguments() -> None:
    # The intake, not the parser, refuses an empty task (with what to type instead).
    assert parse("task") == Command("task", "", "task")
    assert parse("task    ") == Command("task", "", "task")


def test_a_huge_task_is_passed_on_whole() -> None:
    # The length limit is the intake's (it says how long the task was): nothing is cut here.
    body = "x" * 200_000
    assert parse(f"task {body}").args == body


@pytest.mark.parametrize(
    ("text", "word", "args"),
    [
        ("frobnicate now", "frobnicate", "now"),
        ("tasks do it", "tasks", "do it"),  # close to a verb is not a verb
        ("halp", "halp", ""),
        ("<!channel> hi", "<!channel>", "hi"),
        ("🙂", "🙂", ""),
    ],
)
def test_an_unknown_verb_is_unknown_with_what_was_typed(text: str, word: str, args: str) -> None:
    # Given a first word that is no verb, Then the bot can say which word it did not know
    assert parse(text) == Command("unknown", args, word)


def test_a_task_without_the_task_verb_is_not_taken_as_a_task() -> None:
    # `/aico write me a poem`: the first word is taken as a verb, so this shows the help
    # rather than queueing something the user may not have meant to send.
    assert parse("write me a poem").verb == "unknown"


# --------------------------------------------------------------------------- history


def test_history_defaults_to_the_users_own_latest_ten() -> None:
    assert history_query("") == HistoryQuery(channel=False, limit=HISTORY_DEFAULT)
    assert HISTORY_DEFAULT == 10


@pytest.mark.parametrize(
    ("args", "query"),
    [
        ("5", HistoryQuery(False, 5)),
        ("  7  ", HistoryQuery(False, 7)),
        ("05", HistoryQuery(False, 5)),
        ("channel", HistoryQuery(True, HISTORY_DEFAULT)),
        ("channel 3", HistoryQuery(True, 3)),
        ("CHANNEL 3", HistoryQuery(True, 3)),
        ("Channel\t3", HistoryQuery(True, 3)),
        ("1", HistoryQuery(False, 1)),
        (str(HISTORY_MAX), HistoryQuery(False, HISTORY_MAX)),
        (f"channel {HISTORY_MAX}", HistoryQuery(True, HISTORY_MAX)),
    ],
)
def test_history_n_and_history_channel_n(args: str, query: HistoryQuery) -> None:
    assert history_query(args) == query


@pytest.mark.parametrize(
    "args",
    ["abc", "-3", "2.5", "5 channel", "channel channel", "channel 5 6", "5 6", "me", "channel x"],
)
def test_history_arguments_it_cannot_read_get_the_usage(args: str) -> None:
    with pytest.raises(ValueError) as error:
        history_query(args)
    assert str(error.value) == (
        "Use `/aico history [n]` for yours, `/aico history channel [n]` for this channel's."
    )


@pytest.mark.parametrize("args", ["0", "51", "channel 0", "channel 1000", "99999999999999999999"])
def test_history_beyond_the_range_says_the_range(args: str) -> None:
    with pytest.raises(ValueError) as error:
        history_query(args)
    assert str(error.value) == f"Ask for 1 to {HISTORY_MAX} tasks."


@pytest.mark.parametrize("args", ["²", "channel ³"])
def test_history_with_a_digit_like_character_gets_the_usage(args: str) -> None:
    with pytest.raises(ValueError) as error:
        history_query(args)
    assert str(error.value).startswith("Use `/aico history [n]`")


# --------------------------------------------------------------------------- budget


def test_budget_alone_asks_for_the_standing_not_a_change() -> None:
    assert budget_change("") is None
    assert budget_change("   ") is None


@pytest.mark.parametrize(
    ("args", "change"),
    [
        ("user U123ABC 25", BudgetChange("user", "U123ABC", 25.0)),
        ("user W123ABC 25", BudgetChange("user", "W123ABC", 25.0)),  # Enterprise Grid ids
        ("user <@U123ABC> 25", BudgetChange("user", "U123ABC", 25.0)),
        ("user <@U123ABC|ada> 25", BudgetChange("user", "U123ABC", 25.0)),
        ("USER U123ABC $12.50", BudgetChange("user", "U123ABC", 12.5)),
        ("channel 10", BudgetChange("channel", "", 10.0)),
        ("Channel $0.5", BudgetChange("channel", "", 0.5)),
        ("  channel   7  ", BudgetChange("channel", "", 7.0)),
        ("channel 999999.99", BudgetChange("channel", "", 999_999.99)),
    ],
)
def test_budget_changes_an_admin_can_type(args: str, change: BudgetChange) -> None:
    assert budget_change(args) == change


@pytest.mark.parametrize(
    "args",
    [
        "user",
        "user U123ABC",
        "user 25",
        "user @ada 25",  # a plain @name (what Slack sends when it does not escape mentions)
        "user u123abc 25",  # user ids are upper case
        "user C123ABC 25",  # a channel id is not a user
        "user <#C123ABC|general> 25",
        "user U123ABC 25 extra",
        "user <@U123ABC|Ada Lovelace> 25",  # a name with a space splits into two words
        "channel",
        "channel C123ABC 10",  # another channel cannot be named: run it in that channel
        "team 10",
        "25",
    ],
)
def test_budget_forms_it_cannot_read_get_the_usage(args: str) -> None:
    with pytest.raises(ValueError) as error:
        budget_change(args)
    assert str(error.value) == BUDGET_USAGE


@pytest.mark.parametrize("amount", ["ten", "1,000", "25$", "25usd", "", "$"])
def test_an_amount_that_is_not_dollars_is_named_in_the_error(amount: str) -> None:
    args = f"channel {amount}" if amount else "channel $$"
    with pytest.raises(ValueError) as error:
        budget_change(args)
    shown = amount or "$$"
    assert str(error.value) == f"`{shown}` is not an amount in US dollars. {BUDGET_USAGE}"


def test_a_long_wrong_amount_is_cut_to_twenty_characters_in_the_error() -> None:
    with pytest.raises(ValueError) as error:
        budget_change("channel " + "9x" * 40)
    assert str(error.value).startswith("`" + ("9x" * 10) + "` is not an amount")


@pytest.mark.parametrize("amount", ["0", "-5", "$-1", "0.0", "1000000", "1e9", "nan", "inf"])
def test_an_amount_that_is_not_positive_or_absurd_is_refused(amount: str) -> None:
    with pytest.raises(ValueError) as error:
        budget_change(f"channel {amount}")
    assert str(error.value) == "A budget is a positive amount of US dollars, like `25`."


def test_the_usage_names_both_forms_an_admin_can_type() -> None:
    assert "`/aico budget user <user id> <usd>`" in BUDGET_USAGE
    assert "`/aico budget channel <usd>`" in BUDGET_USAGE
