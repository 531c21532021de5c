//! Build requests from the `jenkins-requests` SQS queue (SPEC A10, part B).
//!
//! A message comes from outside and is treated as hostile: it becomes a
//! Jenkins CLI command only if its sender is on `--sqs_senders`, its action
//! is on the allow-list and not on the original's deny-list, its job is on
//! `--sqs_jobs`, and its job name and parameters pass validation.
//! The result is a list of words, each handed to Jenkins as one argument —
//! never through a shell.

use serde_json::Value;
use wildmatch::WildMatch;

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
    #[error("job {0} is not on --sqs_jobs")]
    JobNotAllowed(Echo),
    #[error("sender {0} is not on --sqs_senders")]
    SenderNotAllowed(Echo),
    #[error("no SenderId in the message, and --sqs_senders is set")]
    NoSender,
}

/// What an SQS message may ask for and who may ask: `--sqs_actions`,
/// `--sqs_jobs`, `--sqs_senders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// CLI commands a message may run.
    pub actions: Vec<String>,
    /// Globs over a job's full name (`team/app-*`); `None`: any job.
    pub jobs: Option<Vec<String>>,
    /// `SenderId`s (an IAM user's id, a role's id with or without
    /// `:session`) or 12-digit account ids; `None`: anyone the queue admits.
    pub senders: Option<Vec<String>>,
}

impl Policy {
    /// Any job, any sender: what the original allowed.
    pub fn allowing(actions: &[&str]) -> Policy {
        Policy { actions: actions.iter().map(|a| a.to_string()).collect(), jobs: None, senders: None }
    }

    /// `--sqs_jobs`: a comma list of globs (`*`, `?`).
    pub fn parse_jobs(list: &str) -> Result<Vec<String>, String> {
        let globs = comma_list(list);
        if globs.is_empty() {
            return Err(
                "--sqs_jobs: expected a comma list of job-name globs (e.g. deploy-*,team/app; * for any)".into()
            );
        }
        Ok(globs)
    }

    /// `--sqs_senders`: a comma list of SenderIds or account ids.
    pub fn parse_senders(list: &str) -> Result<Vec<String>, String> {
        let senders = comma_list(list);
        if senders.is_empty() {
            return Err("--sqs_senders: expected a comma list of SenderIds or 12-digit account ids".into());
        }
        for sender in &senders {
            if !is_sender_id(sender) {
                return Err(format!(
                    "--sqs_senders: {sender:?} is neither a 12-digit account id nor a SenderId (an IAM user's or \
                     role's unique id such as AIDA… or AROA…, optionally :SESSION)"
                ));
            }
        }
        Ok(senders)
    }

    /// Is a message from `sender` (its `SenderId` attribute) admitted? An
    /// entry admits the same SenderId; a role id without `:session` admits
    /// every session of that role. SQS gives an account id as the SenderId
    /// of what the account's root user sent.
    pub fn admits_sender(&self, sender: Option<&str>) -> Result<(), Refusal> {
        let Some(allowed) = &self.senders else { return Ok(()) };
        let sender = sender.ok_or(Refusal::NoSender)?;
        // A role id admits its sessions (`AROA…:session`); an account id only
        // itself (the root user): `ACCOUNT:name` is a federated user of that
        // account, not its root.
        let role = sender.split_once(':').map(|(id, _)| id).filter(|id| id.starts_with("AROA"));
        if allowed.iter().any(|a| a == sender || role == Some(a.as_str())) {
            Ok(())
        } else {
            Err(Refusal::SenderNotAllowed(Echo::of(sender)))
        }
    }

    /// Jenkins looks item names up ignoring case (`items` is a map ordered
    /// by `String.CASE_INSENSITIVE_ORDER`), so globs match ignoring case:
    /// otherwise `JOB-A` would pass a glob meant to refuse `job-a`.
    fn admits_job(&self, name: &str) -> bool {
        self.jobs.as_ref().is_none_or(|globs| globs.iter().any(|g| WildMatch::new_case_insensitive(g).matches(name)))
    }
}

fn comma_list(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// A 12-digit account id, or an IAM unique id (upper-case letters and
/// digits) optionally followed by `:` and a role session name.
fn is_sender_id(s: &str) -> bool {
    let (id, session) = match s.split_once(':') {
        Some((id, session)) => (id, Some(session)),
        None => (s, None),
    };
    let account = id.len() == 12 && id.chars().all(|c| c.is_ascii_digit()) && session.is_none();
    let unique = (16..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let session_ok = session.is_none_or(|s| {
        (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    });
    account || (unique && session_ok)
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
pub fn command_words(body: &str, policy: &Policy) -> Result<Vec<String>, Refusal> {
    let allowed = &policy.actions;
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
    if !policy.admits_job(name) {
        return Err(Refusal::JobNotAllowed(Echo::of(name)));
    }

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

    fn words(body: &str) -> Result<Vec<String>, Refusal> {
        command_words(body, &Policy::allowing(&["build"]))
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
        let lax = Policy::allowing(&["build", "delete-job"]);
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
    fn jobs_are_bounded_by_globs_ignoring_case() {
        let policy =
            Policy { jobs: Some(Policy::parse_jobs("deploy-*, team/app").unwrap()), ..Policy::allowing(&["build"]) };
        let name = |n: &str| command_words(&serde_json::json!({"name": n}).to_string(), &policy);
        for yes in ["deploy-web", "Deploy-Web", "deploy-", "team/app", "TEAM/App"] {
            assert!(name(yes).is_ok(), "{yes}");
        }
        for no in ["deploy", "prod/deploy-web", "team/app2", "team/app/x", "admin"] {
            assert_eq!(name(no), Err(Refusal::JobNotAllowed(Echo::of(no))), "{no}");
        }
        assert_eq!(name("admin").unwrap_err().to_string(), r#"job "admin" is not on --sqs_jobs"#);
        // A glob's `*` crosses folders.
        let folders = Policy { jobs: Some(vec!["team/*".into()]), ..Policy::allowing(&["build"]) };
        assert!(command_words(r#"{"name": "team/a/b"}"#, &folders).is_ok());
        assert!(Policy::parse_jobs(" , ").is_err());
    }

    #[test]
    fn senders_are_user_ids_role_ids_or_accounts() {
        let list = "AIDAEXAMPLEUSERID0001,AROAEXAMPLEROLEID0001,AROAEXAMPLEROLEID0002:ci-bot,123456789012";
        let policy = Policy { senders: Some(Policy::parse_senders(list).unwrap()), ..Policy::allowing(&["build"]) };
        for yes in [
            "AIDAEXAMPLEUSERID0001",
            "AROAEXAMPLEROLEID0001:i-0123456789abcdef0",
            "AROAEXAMPLEROLEID0001:awslambda_39_20161007224708400",
            "AROAEXAMPLEROLEID0002:ci-bot",
            "123456789012",
        ] {
            assert_eq!(policy.admits_sender(Some(yes)), Ok(()), "{yes}");
        }
        for no in [
            "AIDAEXAMPLEUSERID0002",
            "AROAEXAMPLEROLEID0002",
            "AROAEXAMPLEROLEID0002:other",
            "AROAEXAMPLEROLEID000",
            "210987654321",
            // A federated user of the account, not its root.
            "123456789012:someone",
            "",
        ] {
            assert!(matches!(policy.admits_sender(Some(no)), Err(Refusal::SenderNotAllowed(_))), "{no}");
        }
        assert_eq!(policy.admits_sender(None), Err(Refusal::NoSender));
        // No --sqs_senders: anyone the queue's policy lets in.
        assert_eq!(Policy::allowing(&["build"]).admits_sender(None), Ok(()));
        for bad in ["", "arn:aws:iam::123456789012:user/ci", "aida-lower", "12345678901", "AIDAEXAMPLEUSERID0001:"] {
            assert!(Policy::parse_senders(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        for body in ["", "not json", "[1]", "\"build foo\"", "{\"name\": \"foo\""] {
            assert!(matches!(words(body), Err(Refusal::NotJson(_))), "{body:?}");
        }
    }
}
