//! Queue labels (SPEC A4): `ENV`, `ENV_shared` or `ENV_spot`, each optionally
//! followed by `_<instance-type>`. We only create capacity for labels we fully
//! understand, so anything else is an error the caller reports and skips.

use std::collections::BTreeSet;

use crate::model::{Label, Pricing};

/// Instance type of an agent whose label names none.
pub const DEFAULT_INSTANCE_TYPE: &str = "t2.small";

/// Why a queue label is not one we create agents for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("empty label")]
    Empty,
    #[error("label `{0}` is a label expression; only plain ENV[_shared|_spot][_TYPE] labels get agents")]
    Expression(String),
    #[error("label `{0}` names no known environment")]
    NoEnv(String),
    #[error("label `{label}` names more than one environment ({})", envs.join(", "))]
    SeveralEnvs { label: String, envs: Vec<String> },
    #[error("label `{label}`: unexpected part `{part}` (expected ENV[_shared|_spot][_TYPE])")]
    UnknownPart { label: String, part: String },
}

/// Characters of Jenkins' label-expression grammar (`&&`, `||`, `!`, `->`,
/// `<->`, parentheses, quotes) and lists.
const EXPRESSION_CHARS: &[char] = &['&', '|', '!', '(', ')', '<', '>', ',', '"', '\''];

pub fn parse_label(raw: &str, known_envs: &BTreeSet<String>) -> Result<Label, LabelError> {
    if raw.trim().is_empty() {
        return Err(LabelError::Empty);
    }
    if raw.chars().any(|c| c.is_whitespace() || EXPRESSION_CHARS.contains(&c)) {
        return Err(LabelError::Expression(raw.to_string()));
    }
    let label = |env: &str, pricing, instance_type: &str| Label {
        raw: raw.to_string(),
        env: env.to_string(),
        pricing,
        instance_type: instance_type.to_string(),
    };
    if known_envs.contains(raw) {
        return Ok(label(raw, Pricing::OnDemand, DEFAULT_INSTANCE_TYPE));
    }

    let parts: Vec<&str> = raw.split('_').collect();
    // A set: `dev_dev` names one env, and its second `dev` is an unknown part.
    let envs: BTreeSet<&str> = parts.iter().copied().filter(|p| known_envs.contains(*p)).collect();
    if envs.len() > 1 {
        let envs = envs.iter().map(|e| e.to_string()).collect();
        return Err(LabelError::SeveralEnvs { label: raw.to_string(), envs });
    }
    let Some(&env) = envs.first() else {
        return Err(LabelError::NoEnv(raw.to_string()));
    };

    // The documented order, strictly: ENV, then at most one pricing word,
    // then at most one instance type.
    let unknown = |part: &str| LabelError::UnknownPart { label: raw.to_string(), part: part.to_string() };
    let mut rest = parts.iter().copied();
    let first = rest.next().unwrap_or_default();
    if first != env {
        return Err(unknown(first));
    }
    let mut rest = rest.peekable();
    let pricing = match rest.peek() {
        Some(&"shared") => Pricing::Shared,
        Some(&"spot") => Pricing::Spot,
        _ => Pricing::OnDemand,
    };
    if pricing != Pricing::OnDemand {
        rest.next();
    }
    let instance_type = match rest.next() {
        None => DEFAULT_INSTANCE_TYPE,
        Some(part) if is_instance_type(part) => part,
        Some(part) => return Err(unknown(part)),
    };
    if let Some(part) = rest.next() {
        return Err(unknown(part));
    }
    Ok(label(env, pricing, instance_type))
}

/// A well-formed EC2 instance type: family `[a-z][a-z0-9-]*`, `.`, size
/// `[a-z0-9]+`. Checked by shape, not against a list, so new types work.
pub fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    let mut family_chars = family.chars();
    family_chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && family_chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !size.is_empty()
        && size.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The instance types a queue label may ask for (`--instance_types`). A
/// label is written by whoever writes a Jenkinsfile: without a limit,
/// `node('prod_x2iedn.32xlarge')` buys the largest machines up to the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTypes {
    /// Globs over the whole type (`m5*.*`, `c6i.large`).
    globs: Vec<String>,
    /// The largest size admitted, in multiples of `xlarge` (`None`: any).
    largest: Option<u32>,
}

impl Default for InstanceTypes {
    /// The original's families (t2, m3/m4, c3/c4) and their current
    /// successors, up to `4xlarge`: what a build agent reasonably needs.
    fn default() -> Self {
        let families = ["t2", "t3", "t3a", "m3", "m4", "m5*", "m6*", "m7*", "c3", "c4", "c5*", "c6*", "c7*"];
        InstanceTypes { globs: families.iter().map(|f| format!("{f}.*")).collect(), largest: Some(4) }
    }
}

impl InstanceTypes {
    /// A comma list of globs (`*`, `?`); every type matching one is admitted,
    /// whatever its size.
    pub fn parse(list: &str) -> Result<InstanceTypes, String> {
        let globs: Vec<String> = list.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect();
        if globs.is_empty() {
            return Err(
                "--instance_types: expected a comma list of instance types or globs (e.g. m5*.*,c6i.large)".into()
            );
        }
        for g in &globs {
            let shape = g.replace(['*', '?'], "x");
            if !g.contains('.') || !is_instance_type(&shape) {
                return Err(format!("--instance_types: {g:?} is not an instance type or a glob of one (family.size)"));
            }
        }
        Ok(InstanceTypes { globs, largest: None })
    }

    pub fn allows(&self, instance_type: &str) -> bool {
        self.globs.iter().any(|g| wildmatch::WildMatch::new(g).matches(instance_type))
            && self.largest.is_none_or(|max| size_in_xlarge(instance_type).is_some_and(|n| n <= max))
    }
}

/// `large` and below → 0, `xlarge` → 1, `4xlarge` → 4, `metal…` → none.
fn size_in_xlarge(instance_type: &str) -> Option<u32> {
    let size = instance_type.split_once('.')?.1;
    match size {
        "nano" | "micro" | "small" | "medium" | "large" => Some(0),
        "xlarge" => Some(1),
        _ => size.strip_suffix("xlarge")?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_admits_the_usual_families_up_to_4xlarge() {
        let d = InstanceTypes::default();
        for yes in [
            "t2.small",
            "t3a.medium",
            "m3.large",
            "c3.2xlarge",
            "m5.large",
            "m5d.4xlarge",
            "m7g.xlarge",
            "c6i.2xlarge",
            "c4.xlarge",
        ] {
            assert!(d.allows(yes), "{yes}");
        }
        for no in ["x2iedn.32xlarge", "m5.8xlarge", "c7g.metal", "p4d.24xlarge", "g5.xlarge", "m5.metal-48xl"] {
            assert!(!d.allows(no), "{no}");
        }
    }

    #[test]
    fn a_list_of_globs_admits_exactly_what_it_names_at_any_size() {
        let t = InstanceTypes::parse("c6i.large, m5*.*").unwrap();
        assert!(t.allows("c6i.large") && t.allows("m5.24xlarge") && t.allows("m5dn.xlarge"));
        assert!(!t.allows("c6i.xlarge") && !t.allows("t2.small"));
        assert!(InstanceTypes::parse("").is_err());
        assert!(InstanceTypes::parse("m5").is_err());
        assert!(InstanceTypes::parse("M5.large").is_err());
    }

    fn envs() -> BTreeSet<String> {
        ["dev", "eod-us-west-2", "prod"].iter().map(|s| s.to_string()).collect()
    }

    fn parse(raw: &str) -> Result<Label, LabelError> {
        parse_label(raw, &envs())
    }

    fn ok(raw: &str) -> (String, Pricing, String) {
        let l = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(l.raw, raw);
        (l.env, l.pricing, l.instance_type)
    }

    fn owned(env: &str, pricing: Pricing, ty: &str) -> (String, Pricing, String) {
        (env.to_string(), pricing, ty.to_string())
    }

    #[test]
    fn plain_env_label_is_on_demand_t2_small() {
        assert_eq!(ok("dev"), owned("dev", Pricing::OnDemand, "t2.small"));
    }

    #[test]
    fn env_name_with_dashes_is_the_whole_label() {
        assert_eq!(ok("eod-us-west-2"), owned("eod-us-west-2", Pricing::OnDemand, "t2.small"));
    }

    #[test]
    fn shared_label_is_shared_pricing() {
        assert_eq!(ok("dev_shared"), owned("dev", Pricing::Shared, "t2.small"));
    }

    #[test]
    fn spot_label_with_type_from_the_spec() {
        assert_eq!(ok("eod-us-west-2_spot_c4.xlarge"), owned("eod-us-west-2", Pricing::Spot, "c4.xlarge"));
    }

    #[test]
    fn on_demand_label_with_type() {
        assert_eq!(ok("prod_m7g.large"), owned("prod", Pricing::OnDemand, "m7g.large"));
    }

    #[test]
    fn modern_instance_types_are_accepted() {
        for ty in ["c6i.2xlarge", "m7g.large", "t2.small", "u-6tb1.metal", "g4dn.xlarge", "c7gn.16xlarge"] {
            assert!(is_instance_type(ty), "{ty}");
            assert_eq!(ok(&format!("dev_shared_{ty}")), owned("dev", Pricing::Shared, ty));
        }
    }

    #[test]
    fn malformed_instance_types_are_rejected() {
        for ty in
            ["c6i", "C6i.large", "6i.large", "c6i.", ".large", "c6i.la.rge", "c6i.Large", "c_6.large", "c6i.x-large"]
        {
            assert!(!is_instance_type(ty), "{ty}");
        }
    }

    #[test]
    fn empty_label_is_rejected() {
        assert_eq!(parse(""), Err(LabelError::Empty));
        assert_eq!(parse("  "), Err(LabelError::Empty));
    }

    #[test]
    fn label_expressions_are_rejected() {
        for raw in
            ["dev && linux", "dev&&linux", "dev||prod", "!dev", "(dev)", "dev,prod", "dev ", "linux->dev", "\"dev\""]
        {
            assert_eq!(parse(raw), Err(LabelError::Expression(raw.to_string())), "{raw}");
        }
    }

    #[test]
    fn label_without_known_env_is_rejected() {
        assert_eq!(parse("linux"), Err(LabelError::NoEnv("linux".into())));
        assert_eq!(parse("staging_spot"), Err(LabelError::NoEnv("staging_spot".into())));
    }

    #[test]
    fn label_naming_two_envs_is_rejected() {
        assert_eq!(
            parse("dev_prod"),
            Err(LabelError::SeveralEnvs { label: "dev_prod".into(), envs: vec!["dev".into(), "prod".into()] })
        );
    }

    #[test]
    fn unknown_extra_parts_are_rejected() {
        let cases = [
            ("dev_linux", "linux"),
            ("dev_spot_shared", "shared"),
            ("dev_c5.large_m5.large", "m5.large"),
            ("dev_spot_c5.large_x", "x"),
            ("spot_dev", "spot"),
            ("dev_c5.large_spot", "spot"),
            ("dev_", ""),
            ("dev_dev", "dev"),
        ];
        for (raw, part) in cases {
            assert_eq!(parse(raw), Err(LabelError::UnknownPart { label: raw.into(), part: part.into() }), "{raw}");
        }
    }

    #[test]
    fn errors_render_for_operators() {
        assert_eq!(
            parse("dev_linux").unwrap_err().to_string(),
            "label `dev_linux`: unexpected part `linux` (expected ENV[_shared|_spot][_TYPE])"
        );
        assert_eq!(
            parse("dev_prod").unwrap_err().to_string(),
            "label `dev_prod` names more than one environment (dev, prod)"
        );
    }
}
