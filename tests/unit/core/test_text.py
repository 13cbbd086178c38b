from core.domain.text import SECTION_LIMIT, escape, preview, split, to_mrkdwn


def test_mentions_and_broadcasts_are_escaped_so_nobody_is_pinged():
    text = "hey <!channel> <!here> <@U123> & <https://x.example|click>"
    assert escape(text) == (
        "hey &lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &amp; &lt;https://x.example|click&gt;"
    )


def test_markdown_becomes_mrkdwn_and_stays_escaped():
    out = to_mrkdwn("# Plan\n**bold** and [docs](https://docs.example/a?b=1&c=2) <!here>")
    assert out == ("*Plan*\n*bold* and <https://docs.example/a?b=1&amp;c=2|docs> &lt;!here&gt;")


def test_code_blocks_keep_their_stars():
    assert to_mrkdwn("```\n**x** < y\n```") == "```\n**x** &lt; y\n```"


def test_split_respects_the_section_limit_and_keeps_every_word():
    text = "\n\n".join(f"paragraph {i} " + "word " * 120 for i in range(40))
    pieces = split(text)
    assert len(pieces) > 1
    assert all(len(p) <= SECTION_LIMIT for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


def test_split_cuts_an_unbroken_string_too():
    pieces = split("x" * 7000)
    assert [len(p) for p in pieces] == [3000, 3000, 1000]


def test_preview_is_one_line_and_bounded():
    assert preview("a\n b   c") == "a b c"
    assert preview("y" * 500, 10) == "y" * 9 + "…"


def test_split_never_cuts_an_escaped_character_in_two():
    pieces = split(escape("x" * 2998 + "<" + "y" * 10))
    assert pieces[0] == "x" * 2998 and pieces[1].startswith("&lt;")
