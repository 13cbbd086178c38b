import pytest

from core.domain.pricing import DEFAULT_PRICES, Price, Prices, usd


def test_a_setting_is_read_whitespace_and_all():
    prices = Prices.parse(" claude-sonnet-4-5 = 3 / 15 ,claude-opus-4-1=15/75, ")
    assert dict(prices) == {
        "claude-sonnet-4-5": Price(3, 15),
        "claude-opus-4-1": Price(15, 75),
    }
    assert Prices.parse("") == Prices() and Prices.parse("  ") == Prices()


def test_set_entries_override_and_extend_the_defaults():
    prices = DEFAULT_PRICES | Prices.parse("claude-sonnet-5-5=2.5/12, my-model=1/2/3/4/0.5")
    assert prices["claude-sonnet-5-5"] == Price(2.5, 12)
    assert prices["my-model"] == Price(1, 2, 3, 4, 0.5)
    assert prices["claude-opus-5-5"] == Price(4, 20, 5, 8, 0.2)
    assert DEFAULT_PRICES["claude-sonnet-5-5"] == Price(2, 10, 2.5, 4, 0.1), "the defaults stay"


@pytest.mark.parametrize(
    "text, entry",
    [
        ("claude-sonnet-4-5=3", "claude-sonnet-4-5=3"),
        ("claude-sonnet-4-5=3/15, claude-opus-4-1 15/75", "claude-opus-4-1 15/75"),
        ("=3/15", "=3/15"),
        ("m=3/fifteen", "m=3/fifteen"),
        ("m=1/2/3", "m=1/2/3"),
        ("m=1/2/3/4", "m=1/2/3/4"),
        ("m=1/2/3/4/5/6", "m=1/2/3/4/5/6"),
        ("m=-1/5", "m=-1/5"),
        ("m=nan/5", "m=nan/5"),
    ],
)
def test_a_bad_entry_is_named(text, entry):
    with pytest.raises(ValueError, match=f"entry {entry!r}"):
        Prices.parse(text)


def test_a_model_priced_twice_is_refused():
    with pytest.raises(ValueError, match="'m' is priced twice"):
        Prices.parse("m=1/2, m=3/4")


def test_the_dated_id_the_api_answers_with_is_priced_by_its_alias():
    assert DEFAULT_PRICES.price("claude-sonnet-4-5-20250929") == DEFAULT_PRICES["claude-sonnet-4-5"]
    assert DEFAULT_PRICES.price("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]
    assert DEFAULT_PRICES.price("claude-3-5-haiku-20241022") == DEFAULT_PRICES["claude-3-5-haiku"]


@pytest.mark.parametrize(
    "model",
    [
        "claude-sonnet-5-5",
        "claude-opus-5-5",
        "claude-haiku-5-5",
        "claude-fable-5-1",
        "claude-haiku-4-5",
    ],
)
def test_the_current_models_have_list_prices_cache_included(model):
    price = DEFAULT_PRICES[model]
    assert None not in (price.cache_write_5m, price.cache_write_1h, price.cache_read)


def test_an_exact_id_wins_then_the_longest_prefix():
    prices = Prices({"m": (1, 1), "m-2": (2, 2), "m-2-x": (9, 9), "m-2-x-1": (3, 3)})
    assert prices.price("m-2-x-1") == Price(3, 3)
    assert prices.price("m-2-x-2025") == Price(9, 9)
    assert prices.price("m-2-y") == Price(2, 2)
    assert prices.price("m-3") == Price(1, 1)


def test_a_prefix_counts_only_at_a_dash():
    # claude-sonnet-5-5 is not claude-sonnet-5 (nor m-4-10 m-4-1)
    assert DEFAULT_PRICES.price("claude-sonnet-5-5") != DEFAULT_PRICES["claude-sonnet-5"]
    assert Prices({"m-4-1": (1, 1)}).price("m-4-10") is None


def test_cost_is_dollars_for_the_tokens_used():
    usage = {"input_tokens": 1_000, "output_tokens": 2_000}
    assert DEFAULT_PRICES.cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(0.033)
    assert DEFAULT_PRICES.cost("claude-sonnet-5-5", usage) == pytest.approx(0.022)
    assert DEFAULT_PRICES.cost("claude-haiku-4-5", usage) == pytest.approx(0.011)


def test_cache_writes_and_reads_are_priced_at_their_own_rates():
    # Sonnet 5.5: input 2, output 10, 5-minute write 2.5, 1-hour write 4, read 0.1 per million
    usage = {
        "input_tokens": 1_000_000,
        "output_tokens": 0,
        "cache_creation_input_tokens": 3_000_000,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 1_000_000,
            "ephemeral_1h_input_tokens": 2_000_000,
        },
        "cache_read_input_tokens": 10_000_000,
    }
    assert DEFAULT_PRICES.cost("claude-sonnet-5-5", usage) == pytest.approx(2 + 2.5 + 8 + 1)
    without_split = {**usage, "cache_creation": None}
    assert DEFAULT_PRICES.cost("claude-sonnet-5-5", without_split) == pytest.approx(2 + 7.5 + 1)


def test_unset_cache_rates_follow_the_standard_multipliers():
    usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 1_000_000,
        "cache_read_input_tokens": 1_000_000,
    }
    assert Prices.parse("m=4/20").cost("m", usage) == pytest.approx(4 * 1.25 + 4 * 0.1)


def test_haiku_5_5_costs_five_times_more_for_a_prompt_over_100k_tokens():
    short = {"input_tokens": 100_000, "output_tokens": 1_000_000}
    long = {"input_tokens": 90_000, "cache_read_input_tokens": 20_000, "output_tokens": 1_000_000}
    assert DEFAULT_PRICES.cost("claude-haiku-5-5", short) == pytest.approx(0.01 + 0.5)
    assert DEFAULT_PRICES.cost("claude-haiku-5-5", long) == pytest.approx(
        (0.09 * 0.1 + 0.02 * 0.01 + 0.5) * 5
    )


def test_an_unpriced_model_or_missing_counts_have_no_cost():
    assert DEFAULT_PRICES.cost("gpt-5", {"input_tokens": 1, "output_tokens": 1}) is None
    assert DEFAULT_PRICES.cost("claude-sonnet-4-5", {}) is None


def test_the_table_is_frozen():
    with pytest.raises(AttributeError):
        DEFAULT_PRICES._table = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_PRICES["m"] = Price(1, 1)  # type: ignore[index]
    assert hash(DEFAULT_PRICES) == hash(Prices(dict(DEFAULT_PRICES)))


@pytest.mark.parametrize(
    "value, shown",
    [
        (None, "cost unknown"),
        (0.0, "$0.0000"),
        (0.00002, "< $0.0001"),
        (0.0123, "$0.0123"),
        (0.033, "$0.0330"),
        (0.99999, "$1.00"),
        (1.5, "$1.50"),
        (1234.567, "$1,234.57"),
    ],
)
def test_dollars_are_shown_for_a_receipt(value, shown):
    assert usd(value) == shown
