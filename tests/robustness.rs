//! Hostile input never panics: the dump parser, environment.json and SQS
//! messages under property-based fuzzing, each failing with a clear,
//! one-line error.

use proptest::prelude::*;
use serde_json::{json, Value};
use slave_manager::config::parse_environment;
use slave_manager::jenkins::dump::parse_dump;
use slave_manager::periodic::sqs_requests::validate::{command_words, Policy};

/// Arbitrary JSON, a few levels deep, biased to the keys the parsers read.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("build_queue".to_string()),
        Just("slave_queue".to_string()),
        Just("jobName".to_string()),
        Just("labels".to_string()),
        Just("description".to_string()),
        Just("busy_executors".to_string()),
        Just("environments".to_string()),
        Just("jenkins-master".to_string()),
        Just("vpcsubnet".to_string()),
        Just("name".to_string()),
        Just("action".to_string()),
        Just("parameters".to_string()),
        "\\PC{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
        "[\\x00-\\x1f ;$`\"'\\\\-]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn one_line(s: &str) -> bool {
    !s.is_empty() && !s.contains('\n')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn dump_parser_never_panics_on_text(text in "\\PC{0,200}") {
        if let Err(e) = parse_dump(&text) {
            prop_assert!(one_line(&e.to_string()));
        }
    }

    #[test]
    fn dump_parser_never_panics_on_json(v in json_value(), warning in any::<bool>()) {
        let text = if warning { format!("Skipping HTTPS certificate checks\n{v}") } else { v.to_string() };
        match parse_dump(&text) {
            Ok(dump) => prop_assert!(dump.nodes.iter().all(|n| !n.labels.iter().any(String::is_empty))),
            Err(e) => prop_assert!(one_line(&e.to_string())),
        }
    }

    #[test]
    fn environment_parser_never_panics(v in json_value(), text in "\\PC{0,80}") {
        for input in [v.to_string(), text] {
            if let Err(e) = parse_environment(&input) {
                prop_assert!(one_line(&e.to_string()));
            }
        }
    }

    #[test]
    fn sqs_messages_never_panic_and_never_yield_unsafe_words(v in json_value(), text in "\\PC{0,80}") {
        let allowed = Policy::allowing(&["build"]);
        for body in [v.to_string(), text] {
            match command_words(&body, &allowed) {
                Ok(words) => {
                    prop_assert_eq!(words[0].as_str(), "build");
                    prop_assert!(!words[1].starts_with('-'));
                    prop_assert!(words.iter().all(|w| !w.chars().any(char::is_control)));
                    // args4j would read `@file` as a file's lines (CVE-2024-23897).
                    prop_assert!(words.iter().all(|w| !w.starts_with('@')));
                    // Words after the name come in `-p K=V` pairs.
                    for pair in words[2..].chunks(2) {
                        prop_assert_eq!(pair[0].as_str(), "-p");
                        prop_assert!(pair.len() == 2 && pair[1].contains('='));
                    }
                }
                Err(e) => prop_assert!(one_line(&e.to_string())),
            }
        }
    }
}
