//! Parses the dump the Groovy script prints (SPEC A5.1).
//!
//! The contract: a JSON object with `build_queue`, `slave_queue` and
//! `messages`. The original script printed every value as a string
//! (`"true"`, `"3"`, `"[a, b]"`); native JSON booleans, numbers and arrays
//! are accepted too. Unknown fields are ignored, a leading non-JSON line
//! (`Skipping HTTPS certificate checks…`) is skipped. Fields beyond the
//! original's that the manager uses when present:
//! - queue item `queueId`: Jenkins' queue id (part of the launch token);
//! - node `busy_executors`: busy executors; a node with any is never stopped
//!   or terminated. Absent: the original rule applies;
//! - node `num_executors`: the executor total;
//! - top-level `controller_labels`: the controller's own labels (its jobs,
//!   such as the GC job on `master_node`, are not ours to serve).

use serde_json::{Map, Value};

use crate::model::{JenkinsDump, Node, QueueItem};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DumpError {
    #[error("the dump is empty")]
    Empty,
    #[error("the dump is not JSON: {0}")]
    NotJson(String),
    #[error("the dump has no {0} list")]
    MissingList(&'static str),
    #[error("{0}: entry {1} is not an object")]
    NotAnObject(&'static str, usize),
}

pub fn parse_dump(text: &str) -> Result<JenkinsDump, DumpError> {
    // Offsets from the lines as they are, line ends included: a CLI on
    // Windows or behind a CRLF-translating hop ends lines with \r\n.
    let start = text
        .split_inclusive('\n')
        .scan(0usize, |offset, line| {
            let at = *offset;
            *offset += line.len();
            Some((at, line))
        })
        .find(|(_, line)| line.trim_start().starts_with('{'))
        .map(|(at, _)| at);
    let Some(start) = start else {
        return Err(if text.trim().is_empty() {
            DumpError::Empty
        } else {
            DumpError::NotJson("no JSON object".into())
        });
    };
    let root: Value = serde_json::from_str(&text[start..]).map_err(|e| DumpError::NotJson(e.to_string()))?;
    let root = root.as_object().ok_or_else(|| DumpError::NotJson("not an object".into()))?;

    let queue = objects(root, "build_queue")?.map(queue_item).collect();
    let nodes = objects(root, "slave_queue")?.map(node).collect();
    let messages = match root.get("messages") {
        Some(Value::Array(a)) => a.iter().map(|v| text_of(v).unwrap_or_default()).collect(),
        Some(v) => text_of(v).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default(),
        None => Vec::new(),
    };
    let controller_labels = root.get("controller_labels").map(label_list).unwrap_or_default();
    Ok(JenkinsDump { queue, nodes, messages, controller_labels })
}

fn objects<'a>(
    root: &'a Map<String, Value>,
    key: &'static str,
) -> Result<impl Iterator<Item = &'a Map<String, Value>>, DumpError> {
    let list = match root.get(key) {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => return Err(DumpError::MissingList(key)),
        Some(_) => return Err(DumpError::MissingList(key)),
    };
    for (i, v) in list.iter().enumerate() {
        if !v.is_object() {
            return Err(DumpError::NotAnObject(key, i));
        }
    }
    Ok(list.iter().filter_map(Value::as_object))
}

/// A value as text, whatever JSON type the script used.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => Some(a.iter().filter_map(text_of).collect::<Vec<_>>().join(", ")),
        Value::Object(_) => Some(v.to_string()),
    }
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(text_of)
}

fn flag(o: &Map<String, Value>, key: &str) -> bool {
    text(o, key).is_some_and(|s| s.trim().eq_ignore_ascii_case("true"))
}

fn number<T: std::str::FromStr>(o: &Map<String, Value>, key: &str) -> Option<T> {
    text(o, key).and_then(|s| s.trim().parse().ok())
}

/// `UNKNOWN`, `NONE`, `null` and blanks all mean "absent".
fn present(s: Option<String>, absent: &str) -> Option<String> {
    s.filter(|s| !s.trim().is_empty() && s.trim() != absent && s != "null")
}

fn queue_item(o: &Map<String, Value>) -> QueueItem {
    QueueItem {
        job_name: text(o, "jobName").unwrap_or_default(),
        label: text(o, "labels").unwrap_or_default().trim().to_string(),
        last_built_on: present(text(o, "lastBuiltOn"), "UNKNOWN"),
        parameters: present(text(o, "parameters"), "NONE"),
        queue_id: number(o, "queueId"),
    }
}

fn node(o: &Map<String, Value>) -> Node {
    let description = text(o, "description").unwrap_or_default();
    let labels = o.get("labels").map(label_list).unwrap_or_default();
    Node {
        name: text(o, "slaveName").unwrap_or_default(),
        labels,
        offline: flag(o, "isOffLine"),
        instance_id: word_after(&description, "InstanceID="),
        ami_id: present(text(o, "ami_id"), "UNKNOWN").or_else(|| word_after(&description, "AmiId=")),
        description,
        idle_executors: number(o, "ope_idle_count"),
        busy_executors: number(o, "busy_executors"),
        num_executors: number(o, "num_executors"),
        idle_seconds: number(o, "idle_seconds"),
        terminate_me: flag(o, "terminate_me"),
    }
}

/// A label list: the original's `"[a, b, c]"` text, or a JSON array.
fn label_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(text_of).collect(),
        other => text_of(other)
            .unwrap_or_default()
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// The whole token after `key` (up to a blank), e.g. `InstanceID=i-0abc`.
fn word_after(text: &str, key: &str) -> Option<String> {
    let rest = &text[text.find(key)? + key.len()..];
    let word: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ',').collect();
    (!word.is_empty()).then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original script's output, verbatim in shape: every value a string.
    const ORIGINAL: &str = r#"Skipping HTTPS certificate checks altogether. Note that this is not secure at all.
{"build_queue": [{"jobName": "folder/job-000", "labels": "dev_spot", "lastBuiltOn": "dev-10.0.1.7",
   "throttleEnabled": "false", "parameters": "BRANCH=master BUILD_NO=0"},
  {"jobName": "job-001", "labels": "dev", "lastBuiltOn": "UNKNOWN", "throttleEnabled": "false", "parameters": "NONE"}],
 "slave_queue": [{"slaveName": "dev-10.0.1.7", "labels": "[dev_spot, swarm]", "isOffLine": "true",
   "description": "Created by Swarm InstanceID=i-0123456789abcdef0 AmiId=ami-0123456789abcdef0", "ami_id": "ami-0123456789abcdef0",
   "ope_idle_count": "1", "connectTime": "1700000000000", "idle_seconds": "2800", "terminate_me": "true", "future": {"x": 1}}],
 "messages": ["hello"]}"#;

    #[test]
    fn parses_the_original_format_with_a_warning_line() {
        let d = parse_dump(ORIGINAL).unwrap();
        assert_eq!(d.queue.len(), 2);
        assert_eq!(d.queue[0].job_name, "folder/job-000");
        assert_eq!(d.queue[0].last_built_on.as_deref(), Some("dev-10.0.1.7"));
        assert_eq!(d.queue[0].parameters.as_deref(), Some("BRANCH=master BUILD_NO=0"));
        assert_eq!(d.queue[1].last_built_on, None);
        assert_eq!(d.queue[1].parameters, None);
        let n = &d.nodes[0];
        assert_eq!(n.labels, ["dev_spot", "swarm"]);
        assert!(n.offline && n.terminate_me);
        assert_eq!(n.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(n.ami_id.as_deref(), Some("ami-0123456789abcdef0"));
        assert_eq!(n.idle_executors, Some(1));
        assert_eq!(n.busy_executors, None, "an original dump has no busy count");
        assert_eq!(d.messages, ["hello"]);
    }

    #[test]
    fn native_json_types_and_our_fields_are_read() {
        let d = parse_dump(
            r#"{"build_queue":[{"jobName":"j","labels":"dev","queueId":42}],
                "slave_queue":[{"slaveName":"n","labels":["dev","swarm"],"isOffLine":false,
                "busy_executors":2,"num_executors":5,"terminate_me":false,"description":"InstanceID=i-1"}],"messages":[]}"#,
        )
        .unwrap();
        assert_eq!(d.queue[0].queue_id, Some(42));
        assert_eq!(d.nodes[0].busy_executors, Some(2));
        assert_eq!(d.nodes[0].num_executors, Some(5));
        assert_eq!(d.nodes[0].labels, ["dev", "swarm"]);
        assert!(!d.nodes[0].offline);
    }

    #[test]
    fn crlf_line_ends_before_the_json_are_skipped() {
        let text = "Skipping HTTPS certificate checks altogether.\r\nWARNING: one\r\nWARNING: two\r\n".to_string()
            + &ORIGINAL.lines().skip(1).collect::<Vec<_>>().join("\r\n")
            + "\r\n";
        let d = parse_dump(&text).unwrap();
        assert_eq!(d.queue.len(), 2);
        assert_eq!(d.nodes[0].labels, ["dev_spot", "swarm"]);
    }

    #[test]
    fn controller_labels_are_read_when_present() {
        let d =
            parse_dump(r#"{"build_queue":[],"slave_queue":[],"controller_labels":"[built-in, master_node]"}"#).unwrap();
        assert_eq!(d.controller_labels, ["built-in", "master_node"]);
        assert_eq!(parse_dump(ORIGINAL).unwrap().controller_labels, Vec::<String>::new());
    }

    #[test]
    fn garbage_and_truncated_dumps_are_errors() {
        assert_eq!(parse_dump(""), Err(DumpError::Empty));
        assert!(matches!(parse_dump("ERROR: anonymous is missing Overall/Read"), Err(DumpError::NotJson(_))));
        assert!(matches!(parse_dump(&ORIGINAL[..ORIGINAL.len() / 2]), Err(DumpError::NotJson(_))));
        assert_eq!(parse_dump(r#"{"slave_queue":[]}"#), Err(DumpError::MissingList("build_queue")));
        assert_eq!(
            parse_dump(r#"{"build_queue":[1],"slave_queue":[]}"#),
            Err(DumpError::NotAnObject("build_queue", 0))
        );
    }
}
