//! Build requests from the `jenkins-requests` SQS queue (SPEC A10, part B).
//!
//! A message comes from outside and is treated as hostile: it becomes a
//! Jenkins CLI command only if its action is on the allow-list and not on the
//! original's deny-list, and its job name and parameters pass validation.
//! The result is a list of words, each handed to Jenkins as one argument —
//! never through a shell.

use serde_json::Value;

/// The original refused any action containing one of these, in any case; we
/// still do, whatever the allow-list says.
pub const DENIED_SUBSTRINGS: &[&str] = &["delete", "groovy", "install", "node"];

/// Characters Jenkins refuses in a job name (`Jenkins.checkGoodName`).
const BAD_NAME_CHARS: &str = "?*/\\%!@#$^&|<>[]:;";

/// At most this many characters of a message's own text are echoed in the
/// log (a message may be 1 MiB).
pub const ECHO_CHARS: usize = 200;

/// Text from a message as the log shows it: quoted, control characters
/// escaped, at most `ECHO_CHARS` characters of it, then how many more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    head: String,
    more: usize,
}

impl Echo {
    pub fn of(text: &str) -> Echo {
        Echo::clipped(text, ECHO_CHARS)
    }

    fn clipped(text: &str, max: usize) -> Echo {
        Echo::cut(escaped(text, true), max)
    }

    fn cut(mut chars: impl Iterator<Item = char>, max: usize) -> Echo {
        let head = chars.by_ref().take(max).collect();
        Echo { head, more: chars.count() }
    }
}

/// `text` with control characters escaped as Rust does (`\n`, `\u{1b}`),
/// and with `"` and `\` too when it is to be shown between quotes.
fn escaped(text: &str, quotes: bool) -> impl Iterator<Item = char> + '_ {
    enum One {
        Plain(Option<char>),
        Escaped(std::char::EscapeDebug),
    }
    impl Iterator for One {
        type Item = char;
        fn next(&mut self) -> Option<char> {
            match self {
                One::Plain(c) => c.take(),
                One::Escaped(e) => e.next(),
            }
        }
    }
    text.chars().flat_map(move |c| {
        if c.is_control() || (quotes && matches!(c, '"' | '\\')) {
            One::Escaped(c.escape_debug())
        } else {
            One::Plain(Some(c))
        }
    })
}

impl std::fmt::Display for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.head)?;
        if self.more > 0 {
            write!(f, "… ({} more characters)", self.more)?;
        }
        Ok(())
    }
}

/// `text` (a log line's tail, such as Jenkins' answer) cut to `max`
/// characters, control characters escaped.
pub fn clip(text: &str, max: usize) -> String {
    let echo = Echo::cut(escaped(text, false), max);
    if echo.more == 0 {
        echo.head
    } else {
        format!("{}… ({} more characters)", echo.head, echo.more)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no job name")]
    NoName,
    #[error("job name {0} is not one Jenkins could hold")]
    BadName(Echo),
    #[error("action {0} is refused")]
    Denied(Echo),
    #[error("action {0} is not allowed (allowed: {1})")]
    NotAllowed(Echo, String),
    #[error("parameter {0}")]
    BadParameter(String),
}

/// The words as the log shows them: parameter names, never their values
/// (a value can be a secret), cut to a bounded length.
pub fn masked(words: &[String]) -> String {
    let mut shown = Vec::with_capacity(words.len());
    let mut after_p = false;
    for word in words {
        shown.push(match (after_p, word.split_once('=')) {
            (true, Some((key, _))) => format!("{key}=***"),
            (true, None) => "***".to_string(),
            (false, _) => word.clone(),
        });
        after_p = word == "-p";
    }
    clip(&crate::jenkins::quote::command_line(&shown), 2 * ECHO_CHARS)
}

/// Is `action` refused by the deny-list?
pub fn is_denied(action: &str) -> bool {
    let lower = action.to_lowercase();
    DENIED_SUBSTRINGS.iter().any(|d| lower.contains(d))
}

/// Turns a message body into the words of one CLI command:
/// `<action> <name> [-p K=V]…`.
pub fn command_words(body: &str, allowed: &[String]) -> Result<Vec<String>, Refusal> {
    let msg: Value = serde_json::from_str(body).map_err(|e| Refusal::NotJson(e.to_string()))?;
    let msg = msg.as_object().ok_or_else(|| Refusal::NotJson("not an object".into()))?;

    let action = match msg.get("action") {
        None | Some(Value::Null) => "build",
        Some(Value::String(a)) => a.as_str(),
        Some(other) => return Err(Refusal::Denied(Echo::of(&other.to_string()))),
    };
    if is_denied(action) {
        return Err(Refusal::Denied(Echo::of(action)));
    }
    // Exact match: ` build` or `Build` is not `build`.
    if !allowed.iter().any(|a| a == action) {
        return Err(Refusal::NotAllowed(Echo::of(action), allowed.join(", ")));
    }

    let name = match msg.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.as_str(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(Refusal::NoName),
        Some(other) => return Err(Refusal::BadName(Echo::of(&other.to_string()))),
    };
    check_job_name(name)?;

    let mut words = vec![action.to_string(), name.to_string()];
    match msg.get("parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(params)) => {
            for (key, value) in params {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(Refusal::BadParameter(format!(
                            "{}: not a string, number or boolean",
                            Echo::of(key)
                        )))
                    }
                };
                check_parameter(key, &value)?;
                words.push("-p".to_string());
                words.push(format!("{key}={value}"));
            }
        }
        Some(_) => return Err(Refusal::BadParameter("list: not an object".into())),
    }
    // The checks above already keep `@` out of every first character; this
    // holds whatever they become.
    if words.iter().any(|w| w.starts_with('@')) {
        return Err(Refusal::BadParameter("a word would start with @".into()));
    }
    Ok(words)
}

/// A name Jenkins could hold, folders allowed (`team/app/build`); never one
/// that the CLI would read as an option.
fn check_job_name(name: &str) -> Result<(), Refusal> {
    let bad = || Refusal::BadName(Echo::of(name));
    if name.len() > 1000 || name.starts_with('-') || name.chars().any(char::is_control) {
        return Err(bad());
    }
    for segment in name.split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.trim() != segment
            || segment.chars().any(|c| BAD_NAME_CHARS.contains(c))
        {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_parameter(key: &str, value: &str) -> Result<(), Refusal> {
    // A leading `@` would make the word `@key=value`, which args4j on an
    // unpatched master reads as a file to expand (CVE-2024-23897).
    if key.is_empty()
        || key.len() > 200
        || key.contains('=')
        || key.starts_with('-')
        || key.starts_with('@')
        || key.chars().any(char::is_control)
    {
        return Err(Refusal::BadParameter(format!("name {} is not valid", Echo::of(key))));
    }
    if value.len() > 10_000 || value.chars().any(char::is_control) {
        return Err(Refusal::BadParameter(format!(
            "{}: the value holds control characters or is too long",
            Echo::of(key)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["build".to_string()]
    }

    fn words(body: &str) -> Result<Vec<String>, Refusal> {
        command_words(body, &allowed())
    }

    #[test]
    fn the_original_message_becomes_a_build() {
        assert_eq!(
            words(r#"{"name": "foo", "action": "build", "parameters": {"BAR": "baz"}}"#).unwrap(),
            ["build", "foo", "-p", "BAR=baz"]
        );
        assert_eq!(words(r#"{"name": "team/app"}"#).unwrap(), ["build", "team/app"]);
        assert_eq!(
            words(r#"{"name": "a b", "parameters": {"N": 3, "F": false}}"#).unwrap(),
            ["build", "a b", "-p", "F=false", "-p", "N=3"]
        );
    }

    #[test]
    fn hostile_values_stay_single_words() {
        let w = words(
            r#"{"name": "foo", "parameters": {"A": "x -p B=y; $(reboot) `id` \"q\" && shutdown", "U": "ünï cödé"}}"#,
        )
        .unwrap();
        assert_eq!(w, ["build", "foo", "-p", "A=x -p B=y; $(reboot) `id` \"q\" && shutdown", "-p", "U=ünï cödé"]);
    }

    #[test]
    fn denied_and_unlisted_actions_are_refused() {
        for action in
            ["shutdown", "safe-restart", "groovy", "Delete-Job", " build", "Build", "install-plugin", "offline-node"]
        {
            let body = serde_json::json!({"name": "foo", "action": action}).to_string();
            assert!(words(&body).is_err(), "{action} accepted");
        }
        assert!(matches!(words(r#"{"name":"foo","action":"GROOVY"}"#), Err(Refusal::Denied(_))));
        // The deny-list holds even if an operator allows such an action.
        let lax = vec!["build".to_string(), "delete-job".to_string()];
        assert!(matches!(command_words(r#"{"name":"foo","action":"delete-job"}"#, &lax), Err(Refusal::Denied(_))));
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "-p", "--help", "a;b", "$(x)", "a\nb", "../x", "a//b", "/a", "a/", " a", "x&&y", "a|b"] {
            let body = serde_json::json!({"name": name}).to_string();
            assert!(words(&body).is_err(), "{name:?} accepted");
        }
        assert_eq!(words(r#"{"action":"build"}"#), Err(Refusal::NoName));
        assert!(matches!(words(r#"{"name": 5}"#), Err(Refusal::BadName(_))));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for params in [
            r#"{"A": "line\nbreak"}"#,
            r#"{"A=B": "x"}"#,
            r#"{"-s": "x"}"#,
            r#"{"": "x"}"#,
            r#"{"A": {"nested": 1}}"#,
            r#"{"A": ["x"]}"#,
            r#"{"A": "tab\there"}"#,
        ] {
            let body = format!(r#"{{"name": "foo", "parameters": {params}}}"#);
            assert!(matches!(words(&body), Err(Refusal::BadParameter(_))), "{params} accepted");
        }
        assert!(matches!(words(r#"{"name": "foo", "parameters": ["A=B"]}"#), Err(Refusal::BadParameter(_))));
    }

    #[test]
    fn no_word_starts_with_an_at_sign() {
        // args4j, which parses CLI arguments on the master, reads `@file` as
        // the lines of that file on old Jenkins (CVE-2024-23897).
        for params in [r#"{"@/etc/passwd": "x"}"#, r#"{"@": "x"}"#, r#"{"@x=y": "z"}"#] {
            let body = format!(r#"{{"name": "foo", "parameters": {params}}}"#);
            assert!(matches!(words(&body), Err(Refusal::BadParameter(_))), "{params} accepted");
        }
        assert!(matches!(words(r#"{"name": "@/etc/passwd"}"#), Err(Refusal::BadName(_))));
        // A value may start with `@`: its word starts with the key.
        assert_eq!(words(r#"{"name": "foo", "parameters": {"A": "@x"}}"#).unwrap(), ["build", "foo", "-p", "A=@x"]);
    }

    #[test]
    fn refusals_echo_bounded_escaped_text() {
        let long = "x".repeat(10_000);
        for body in [
            serde_json::json!({"name": long}),
            serde_json::json!({"name": "foo", "action": format!("delete{long}")}),
            serde_json::json!({"name": "foo", "action": {"a": long}}),
            serde_json::json!({"name": "foo", "parameters": {long.clone(): "v"}}),
        ] {
            let refusal = words(&body.to_string()).unwrap_err().to_string();
            assert!(refusal.len() < 2 * ECHO_CHARS, "{refusal}");
            assert!(refusal.contains("more characters)"), "{refusal}");
        }
        let refusal = words(r#"{"name": "a\u001b[2Jb\nc"}"#).unwrap_err().to_string();
        assert_eq!(refusal, r#"job name "a\u{1b}[2Jb\nc" is not one Jenkins could hold"#);
    }

    #[test]
    fn logged_commands_mask_parameter_values() {
        let w = words(r#"{"name": "foo", "parameters": {"PASSWORD": "hunter2", "B": "-p x=y"}}"#).unwrap();
        assert_eq!(masked(&w), r#""build" "foo" "-p" "B=***" "-p" "PASSWORD=***""#);
        let many: serde_json::Map<String, serde_json::Value> =
            (0..1000).map(|i| (format!("P{i}"), serde_json::json!("v"))).collect();
        let w = words(&serde_json::json!({"name": "foo", "parameters": many}).to_string()).unwrap();
        assert!(masked(&w).chars().count() < 3 * ECHO_CHARS);
    }

    #[test]
    fn garbage_is_refused() {
        for body in ["", "not json", "[1]", "\"build foo\"", "{\"name\": \"foo\""] {
            assert!(matches!(words(body), Err(Refusal::NotJson(_))), "{body:?}");
        }
    }
}
