"""Jenkins' CLI word splitting: a port of `hudson.util.QuotedStringTokenizer`.

Jenkins' SSH CLI splits the exec'd command line with that class; the
emulator splits it with this port, so a test can prove that the manager's
quoting survives the trip (SPEC A5.1).
"""

# QuotedStringTokenizer's defaults: its blanks, and the only characters that a
# backslash escapes (before any other, the backslash stays in the word).
DELIMITERS = " \t\n\r"
ESCAPABLE = "\\\"' "


def tokenize(line):
    """Split a CLI command line into words exactly as Jenkins does.

    A port of `hudson.util.QuotedStringTokenizer.tokenize` with its default
    delimiters, quirks included, because the emulator is the judge of whether
    the manager's quoting survives Jenkins: a backslash that starts a word is
    an ordinary character, a backslash before anything but `\\ " '` or space
    stays in the word, a lone backslash at the very end disappears, and an
    unterminated quote still yields what was read.
    """
    words = []
    i = 0
    while i < len(line):
        word = []
        has_word = False
        quote = None          # the quote character we are inside, if any
        in_word = False       # past the first character of a word
        escape = False
        while i < len(line):
            c = line[i]
            i += 1
            if not in_word:
                if c in DELIMITERS:
                    continue
                in_word = True
                if c in "'\"":
                    quote = c
                else:
                    word.append(c)
                    has_word = True
                continue
            has_word = True
            if escape:
                escape = False
                if c not in ESCAPABLE:
                    word.append("\\")
                word.append(c)
            elif c == "\\":
                escape = True
            elif quote is not None:
                if c == quote:
                    quote = None
                else:
                    word.append(c)
            elif c in DELIMITERS:
                break
            elif c in "'\"":
                quote = c
            else:
                word.append(c)
        if has_word:
            words.append("".join(word))
    return words
