//! Quoting for Jenkins' SSH command line. Jenkins splits the exec'd line with
//! `hudson.util.QuotedStringTokenizer`: blanks separate words outside quotes,
//! quotes group, and a backslash escapes only `\`, `"`, `'` and space. So a
//! word wrapped in `"` with `\` and `"` escaped comes back exactly, whatever
//! else it holds (newlines, `$`, backticks: no shell ever sees it).

/// One word, quoted so the tokenizer returns it unchanged.
pub fn quote_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The whole command line: every word quoted, separated by one space.
pub fn command_line<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| quote_word(w.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcription of QuotedStringTokenizer's default mode, to prove the
    /// round trip (the emulator carries the same logic in Python).
    fn tokenize(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut have = false;
        let mut quote: Option<char> = None;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (_, '\\') if matches!(chars.peek(), Some('\\' | '"' | '\'' | ' ')) => {
                    cur.push(chars.next().unwrap());
                    have = true;
                }
                (None, ' ' | '\t' | '\n' | '\r' | '\x0c') => {
                    if have {
                        words.push(std::mem::take(&mut cur));
                        have = false;
                    }
                }
                (None, '"' | '\'') => {
                    quote = Some(c);
                    have = true;
                }
                (Some(q), c) if c == q => quote = None,
                (_, c) => {
                    cur.push(c);
                    have = true;
                }
            }
        }
        if have {
            words.push(cur);
        }
        words
    }

    #[test]
    fn hostile_words_round_trip() {
        let words = [
            "build",
            "a b",
            "x\"; shutdown; echo \"",
            "$(rm -rf /)",
            "`id`",
            "it's",
            "back\\slash\\",
            "line\nbreak",
            "",
            "-p",
            "K=V && safe-restart",
            "ünïcödé ☃",
        ];
        assert_eq!(tokenize(&command_line(&words)), words);
    }

    proptest::proptest! {
        #[test]
        fn any_words_round_trip(words in proptest::collection::vec("\\PC{0,12}|[ \"'\\\\\n\t$`]{0,6}", 0..8)) {
            proptest::prop_assert_eq!(tokenize(&command_line(&words)), words);
        }
    }

    #[test]
    fn plain_words_are_simply_wrapped() {
        assert_eq!(command_line(&["groovy", "=", "ami-1"]), r#""groovy" "=" "ami-1""#);
    }
}
