//! The key that names a queue item across passes (SPEC A5 step 2): it names
//! the `working_on_<key>.working` marker, so it must stay byte-for-byte what
//! the original computed.

use md5::{Digest, Md5};

/// Keys are cut to this many bytes, as the original cut its byte strings:
/// `working_on_` + key + `.working` then fits a 255-byte file name.
pub const MAX_JOB_KEY_BYTES: usize = 236;

/// Seconds in one client-token window; equals the working-marker TTL.
pub const CLIENT_TOKEN_WINDOW_SECS: u64 = 300;

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `jobName` (`/` → `_CHILD_`) + `___` + md5 of the parameters; `None` is the
/// dump's `NONE` and is hashed as that text, as the original did.
pub fn job_key(job_name: &str, parameters: Option<&str>) -> String {
    // As Python 2 did it: encode to ASCII ('?' for the rest), strip ASCII
    // whitespace, then spaces → '_'. Mapping first matters: a non-ASCII blank
    // at an end is a '?', not trimmed away.
    let ascii: String = parameters.unwrap_or("NONE").chars().map(|c| if c.is_ascii() { c } else { '?' }).collect();
    let params = ascii.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b').replace(' ', "_");
    let mut key = format!("{}___{}", job_name.replace('/', "_CHILD_"), md5_hex(params.as_bytes()));
    // On a character boundary: a long non-ASCII job name must still give a
    // valid file name of at most 255 bytes.
    let mut end = key.len().min(MAX_JOB_KEY_BYTES);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.truncate(end);
    key
}

/// When the window of the client tokens made at `now_secs` ends (seconds
/// since the Unix epoch): after it, no launch sends those tokens again.
pub fn client_token_window_end(now_secs: u64) -> u64 {
    (now_secs / CLIENT_TOKEN_WINDOW_SECS + 1) * CLIENT_TOKEN_WINDOW_SECS
}

/// RunInstances idempotency token for one item. It changes every 300 s, the
/// working-marker TTL: an SDK retry within the pass reuses it, while a retry
/// after the marker expired (the job still waits) launches anew.
pub fn client_token(env: &str, job_key: &str, queue_id: Option<u64>, now_secs: u64) -> String {
    let queue_id = queue_id.map_or_else(|| "-".to_string(), |id| id.to_string());
    let window = now_secs / CLIENT_TOKEN_WINDOW_SECS;
    md5_hex(format!("{env}|{job_key}|{queue_id}|{window}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parameters` as the original dump script printed them: Jenkins'
    /// `Queue.Item.getParams()`, each parameter's short description after a
    /// newline.
    const ORIGINAL_PARAMS: &str = "\nBRANCH=master\nBUILD_NO=0";

    #[test]
    fn job_key_matches_the_original_for_a_parameterised_job() {
        // The Python script: strip (the leading newline goes), spaces → _, md5.
        assert_eq!(job_key("job-000", Some(ORIGINAL_PARAMS)), "job-000___0229e1082c8dd9a2f7f2d7f51901a614");
        assert_eq!(job_key("job-000", Some("BRANCH=master\nBUILD_NO=0")), job_key("job-000", Some(ORIGINAL_PARAMS)));
    }

    #[test]
    fn a_password_parameter_hashes_its_mask() {
        // getParams() shows a password parameter as NAME=****.
        assert_eq!(
            job_key("deploy", Some("\nTOKEN=****\nENV=dev")),
            format!("deploy___{}", md5_hex(b"TOKEN=****\nENV=dev"))
        );
    }

    #[test]
    fn missing_parameters_hash_the_text_none() {
        // md5("NONE")
        assert_eq!(job_key("job", None), "job___b50339a10e1de285ac99d4c3990b8693");
        assert_eq!(job_key("job", None), job_key("job", Some("NONE")));
    }

    #[test]
    fn folder_separators_become_child_markers() {
        assert_eq!(
            job_key("team/app/build", Some(ORIGINAL_PARAMS)),
            "team_CHILD_app_CHILD_build___0229e1082c8dd9a2f7f2d7f51901a614"
        );
    }

    #[test]
    fn parameters_are_trimmed_before_hashing() {
        assert_eq!(job_key("j", Some("  BRANCH=master BUILD_NO=0\n")), job_key("j", Some("BRANCH=master BUILD_NO=0")));
    }

    #[test]
    fn a_non_ascii_blank_at_an_end_is_a_question_mark_not_trimmed() {
        // Python 2: u"A=1\u00a0".encode("ascii", "replace").strip() == "A=1?"
        assert_eq!(job_key("j", Some("A=1\u{a0}")), format!("j___{}", md5_hex(b"A=1?")));
        assert_eq!(job_key("j", Some("\u{2003}A=1")), format!("j___{}", md5_hex(b"?A=1")));
    }

    #[test]
    fn spaces_and_underscores_hash_alike() {
        assert_eq!(job_key("j", Some("A=1 B=2")), job_key("j", Some("A=1_B=2")));
        assert_ne!(job_key("j", Some("A=1 B=2")), job_key("j", Some("A=1B=2")));
    }

    #[test]
    fn each_non_ascii_char_hashes_as_one_question_mark() {
        assert_eq!(job_key("j", Some("NAME=Jörg €")), job_key("j", Some("NAME=J?rg_?")));
        assert_ne!(job_key("j", Some("NAME=Jörg")), job_key("j", Some("NAME=J??rg")));
    }

    #[test]
    fn long_keys_are_cut_to_236_chars() {
        let key = job_key(&"a".repeat(300), None);
        assert_eq!(key.len(), MAX_JOB_KEY_BYTES);
        assert_eq!(key, "a".repeat(236));
        let cut_hash = job_key(&"a".repeat(210), None);
        assert_eq!(cut_hash, format!("{}___{}", "a".repeat(210), &"b50339a10e1de285ac99d4c3990b8693"[..23]));
        let whole = job_key(&"a".repeat(200), None);
        assert_eq!(whole.len(), 235, "short keys are not padded");
    }

    #[test]
    fn long_non_ascii_job_names_are_cut_to_236_bytes_on_a_char_boundary() {
        let key = job_key(&"ü".repeat(300), None);
        assert_eq!(key.len(), 236, "118 two-byte characters");
        assert!(key.chars().all(|c| c == 'ü'));
        let key = job_key(&format!("a{}", "€".repeat(100)), None);
        assert_eq!(key.len(), 235, "a cut inside a three-byte character goes back to its start");
        assert!(format!("working_on_{key}.working").len() <= 255);
    }

    #[test]
    fn client_token_is_md5_of_env_key_queue_id_and_window() {
        // md5("dev|job-000___x|42|5666666")
        let expected = md5_hex(b"dev|job-000___x|42|5666666");
        assert_eq!(client_token("dev", "job-000___x", Some(42), 1_700_000_000), expected);
        assert_eq!(expected.len(), 32);
        assert_eq!(client_token("dev", "k", None, 0), md5_hex(b"dev|k|-|0"));
    }

    #[test]
    fn a_token_window_ends_on_the_next_multiple_of_300_s() {
        assert_eq!(client_token_window_end(1_699_999_800), 1_700_000_100);
        assert_eq!(client_token_window_end(1_700_000_099), 1_700_000_100);
        assert_eq!(client_token_window_end(1_700_000_100), 1_700_000_400);
    }

    #[test]
    fn client_token_is_stable_within_a_window_and_changes_after_it() {
        let t = |secs| client_token("dev", "k", Some(1), secs);
        assert_eq!(t(600), t(899));
        assert_ne!(t(899), t(900));
    }

    #[test]
    fn client_token_differs_per_env_and_queue_item() {
        assert_ne!(client_token("dev", "k", Some(1), 0), client_token("prod", "k", Some(1), 0));
        assert_ne!(client_token("dev", "k", Some(1), 0), client_token("dev", "k", Some(2), 0));
        assert_ne!(client_token("dev", "k", Some(1), 0), client_token("dev", "k", None, 0));
    }

    #[test]
    fn md5_hex_matches_a_known_digest() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
