"""The emulator's port of Jenkins' hudson.util.QuotedStringTokenizer: the
cases of Jenkins' own QuotedStringTokenizerTest, the quirks the port keeps,
and the manager's way of quoting a word surviving it."""

from emulator.tokenizer import tokenize

# core/src/test/java/hudson/util/QuotedStringTokenizerTest.java, test1..7.
JENKINS_CASES = [
    ('foo bar', ["foo", "bar"]),
    ('foo "bar zot"', ["foo", "bar zot"]),
    ('foo bar="quote zot"', ["foo", "bar=quote zot"]),
    ('foo\\"', ['foo"']),
    ('foo\\ bar', ["foo bar"]),
    ('foo\\\\ bar', ["foo\\", "bar"]),
    ('foo="bar\\zot"', ["foo=bar\\zot"]),
]


def test_jenkins_own_cases():
    for line, words in JENKINS_CASES:
        assert tokenize(line) == words, (line, tokenize(line))


def test_quirks_of_the_original_are_kept():
    assert tokenize("  \t a \r\n b  ") == ["a", "b"]
    assert tokenize("\\foo") == ["\\foo"]            # a word's first backslash is a character
    assert tokenize("foo\\") == ["foo"]              # a lone backslash at the end goes
    assert tokenize('"foo bar') == ["foo bar"]       # an unterminated quote keeps what it read
    assert tokenize("'it''s'") == ["its"]            # quotes join, as in a shell
    assert tokenize('a "" b') == ["a", "", "b"]      # an empty quoted word is a word
    assert tokenize("") == [] and tokenize("   ") == []


def quote(word):
    """How the manager (and tests/support/bin/java) quote a word: in double
    quotes, with backslash and double quote backslash-escaped."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_manager_quoting_round_trips():
    words = ["groovy", "=", "ami:dev=ami-1", "two words", 'say "hi"', "back\\slash",
             "trailing\\", "it's", "", "tab\there", "new\nline", "ünïcode"]
    assert tokenize(" ".join(quote(w) for w in words)) == words
