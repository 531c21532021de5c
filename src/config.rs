//! Raw flags + environment.json → a validated `Config`. Everything a user can
//! get wrong is caught here, before any AWS or Jenkins call, and reported as
//! one line that names the flag or key at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cli::{Args, CliTransport};
use crate::jenkins::cli::{is_loopback, url_host};
use crate::jenkins::host_key::KnownHostsFile;
use crate::label::InstanceTypes;
use crate::tls::CertCheck;

/// The Groovy dump script shipped inside the binary (`--groovy` overrides it).
pub const BUNDLED_GROOVY: &str = include_str!("../jenkins/get_queue_jobs.groovy");

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// One subnet of an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub az: String,
}

/// One env of environment.json: an AWS account + region where agents live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvConfig {
    pub name: String,
    pub account_id: String,
    pub region: String,
    pub vpc_id: String,
    /// Security group of the agents (`jenkins-sg`).
    pub agent_sg: String,
    pub instance_profile: String,
    pub subnets: Vec<Subnet>,
    pub jenkins_url: String,
    /// Current AMI, from `--ami_ids`; `None`: nothing is created here.
    pub ami: Option<String>,
}

impl EnvConfig {
    pub fn instance_profile_arn(&self) -> String {
        format!("arn:aws:iam::{}:instance-profile/{}", self.account_id, self.instance_profile)
    }
}

/// A `PORT:CIDR` rule the master's security group must keep.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpRule {
    pub port: u16,
    /// Normalised: host bits cleared.
    pub cidr: String,
    /// The flag's CIDR had host bits set (`1.2.3.4/24`): worth a warning.
    pub host_bits: bool,
}

/// The master's identity from environment.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterConfig {
    /// Also the IAM role name assumed in every env.
    pub sg_name: String,
    pub sg_id: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub jenkins_user: String,
    pub id_rsa: PathBuf,
    pub groovy: String,
    pub cli: CliTransport,
    /// Of the Jenkins URL's certificate (`--no_certificate_check`: `Skip`).
    pub certificate_check: CertCheck,
    /// `--known_hosts`, read and checked at start.
    pub known_hosts: Option<KnownHostsFile>,
    /// `--cli_jar`, absolute: no jar is downloaded.
    pub cli_jar: Option<PathBuf>,
    pub envs: BTreeMap<String, EnvConfig>,
    pub master: MasterConfig,
    pub max_on_demand: u32,
    pub max_spot: u32,
    pub loop_counter: u32,
    /// No pass starts once the run is this old (`--max_minutes`).
    pub max_run: Duration,
    pub pass_interval: Duration,
    pub slave_name: String,
    pub owner_email: String,
    pub max_spot_price: String,
    /// Instance types a label may ask for (`--instance_types`).
    pub instance_types: InstanceTypes,
    pub required_ip_list: Vec<IpRule>,
    pub idle_minutes: u32,
    pub hourly_billing: bool,
    /// Running agents that are no node this long after launch are terminated.
    pub zombie_after: Option<Duration>,
    pub spot_fallback: bool,
    pub sqs_account_id: Option<String>,
    pub sqs_region: Option<String>,
    pub sqs_queue: String,
    /// What SQS messages may run and who may send them (never an action on
    /// the deny-list).
    pub sqs_policy: crate::requests::Policy,
    pub master_region: String,
    pub scm_host: String,
    pub manage_security_group: bool,
    /// `None`: no GC trigger.
    pub gc_job: Option<String>,
    pub debug: bool,
    pub dry_run: bool,
    pub aws_timeout: Duration,
    pub jenkins_timeout: Duration,
    /// Bytes one CLI command may print (`--max_cli_output_mb`).
    pub cli_output_limit: u64,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let jenkins_user = args.jenkins_user.clone().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
            bad("--jenkins_user (or $JENKINS_USER) is required: the Jenkins account whose key --id_rsa is")
        })?;
        if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
            return Err(bad(format!("--url {:?}: must start with http:// or https://", args.url)));
        }
        let host = url_host(&args.url).ok_or_else(|| bad(format!("--url {:?}: no host", args.url)))?;
        if args.url.starts_with("http://") && !is_loopback(&args.url) {
            if !args.allow_insecure_http {
                return Err(bad(format!(
                    "--url {}: plain http to {host}, which is not this machine: anyone on the way could read and \
                     change what Jenkins says (use https, or pass --allow_insecure_http to accept that)",
                    args.url
                )));
            }
            if args.cli == CliTransport::Jar && args.cli_jar.is_none() {
                return Err(bad(format!(
                    "--cli jar would download jenkins-cli.jar over plain http from {host}, where anyone on the way \
                     could replace it: give --cli_jar PATH (the master's own, e.g. \
                     /var/cache/jenkins/war/WEB-INF/lib/cli-VERSION.jar), or use https or --cli ssh"
                )));
            }
        }
        let known_hosts = match &args.known_hosts {
            None => None,
            Some(path) => {
                Some(KnownHostsFile::read(path).map_err(|e| bad(format!("--known_hosts {}: {e}", path.display())))?)
            }
        };
        // Over a channel nobody checks, X-Instance-Identity vouches for
        // nothing: whoever forges the page forges the header with it, then
        // serves the dump. Only a known_hosts file can pin the key then; and
        // a jar fetched that way would run with the admin key.
        let unchecked = if args.url.starts_with("https://") {
            args.no_certificate_check.then_some("--no_certificate_check")
        } else {
            (!is_loopback(&args.url)).then_some("--allow_insecure_http")
        };
        if let Some(flag) = unchecked {
            if known_hosts.is_none() {
                return Err(bad(format!(
                    "{flag} needs --known_hosts FILE: over an unchecked channel Jenkins' X-Instance-Identity \
                     proves nothing, so its SSH host key must be pinned by a known_hosts line (see the README's \
                     \"Jenkins' SSH host key\")"
                )));
            }
            if args.cli == CliTransport::Jar && args.cli_jar.is_none() {
                return Err(bad(format!(
                    "--cli jar with {flag} would run a jenkins-cli.jar fetched over an unchecked channel: give \
                     --cli_jar PATH (the master's own, e.g. /var/cache/jenkins/war/WEB-INF/lib/cli-VERSION.jar), \
                     or use --cli ssh"
                )));
            }
        }
        let cli_jar = match &args.cli_jar {
            None => None,
            Some(path) => {
                let found = std::fs::metadata(path).and_then(|m| {
                    if m.is_file() {
                        std::fs::canonicalize(path)
                    } else {
                        Err(std::io::Error::other("not a file"))
                    }
                });
                Some(found.map_err(|e| bad(format!("--cli_jar {}: {e}", path.display())))?)
            }
        };
        check_private_key(&args.id_rsa)?;
        let groovy = match &args.groovy {
            None => BUNDLED_GROOVY.to_string(),
            Some(path) => {
                std::fs::read_to_string(path).map_err(|e| bad(format!("--groovy {}: {e}", path.display())))?
            }
        };
        if args.owner_email.trim().is_empty() {
            return Err(bad("--owner_email must not be empty"));
        }
        match args.max_spot_price.parse::<f64>() {
            Ok(p) if p > 0.0 && p.is_finite() => {}
            _ => return Err(bad(format!("--max_spot_price {:?}: not a positive price in USD", args.max_spot_price))),
        }
        if !(args.max_minutes > 0.0 && args.max_minutes.is_finite() && args.max_minutes <= 24.0 * 60.0) {
            return Err(bad(format!(
                "--max_minutes {}: must be a number of minutes > 0 (at most a day)",
                args.max_minutes
            )));
        }
        if !(args.pass_interval >= 0.0 && args.pass_interval.is_finite()) {
            return Err(bad("--pass_interval must be a number of seconds ≥ 0"));
        }
        if args.aws_timeout < 3 || args.jenkins_timeout == 0 {
            return Err(bad("--aws_timeout must be at least 3 seconds and --jenkins_timeout at least 1"));
        }
        if !(1..=4096).contains(&args.max_cli_output_mb) {
            return Err(bad("--max_cli_output_mb must be between 1 and 4096 (MiB)"));
        }
        if args.idle_minutes == 0 {
            return Err(bad("--idle_minutes must be at least 1"));
        }
        if args.slave_name.trim().is_empty() {
            return Err(bad("--slave_name must not be empty"));
        }
        if args.aws_sqs_account_id.is_some() && args.aws_sqs_region.is_none() {
            return Err(bad("--aws_sqs_account_id needs --aws_sqs_region"));
        }

        if let Some(account) = &args.aws_sqs_account_id {
            if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad(format!("--aws_sqs_account_id {account:?}: not a 12-digit AWS account id")));
            }
        }
        let sqs_actions: Vec<String> =
            args.sqs_actions.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
        for action in &sqs_actions {
            if !action.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                return Err(bad(format!("--sqs_actions: {action:?} is not a Jenkins CLI command name")));
            }
            if crate::requests::is_denied(action) {
                return Err(bad(format!(
                    "--sqs_actions: {action:?} is on the deny-list (delete, groovy, install, node)"
                )));
            }
        }
        let gc_job = args.gc_job.trim();
        if gc_job.starts_with('-') || gc_job.starts_with('@') {
            return Err(bad(format!("--gc_job {gc_job:?}: a job name cannot start with - or @")));
        }
        if args.scm_host.trim().is_empty() && !args.skip_security_group {
            return Err(bad("--scm_host must not be empty (or give --skip_security_group)"));
        }

        let text = std::fs::read_to_string(&args.environment)
            .map_err(|e| bad(format!("{}: {e}", args.environment.display())))?;
        let (master, mut envs) =
            parse_environment(&text).map_err(|e| bad(format!("{}: {e}", args.environment.display())))?;
        for (env, ami) in parse_ami_ids(&args.ami_ids)? {
            let known = envs.keys().cloned().collect::<Vec<_>>().join(", ");
            let e = envs.get_mut(&env).ok_or_else(|| {
                bad(format!("--ami_ids: env {env:?} is not in {} (it has: {known})", args.environment.display()))
            })?;
            e.ami = Some(ami);
        }
        let instance_types = match &args.instance_types {
            None => InstanceTypes::default(),
            Some(list) => InstanceTypes::parse(list).map_err(bad)?,
        };
        let required_ip_list = args.required_ip_list.iter().map(|w| parse_ip_rule(w)).collect::<Result<Vec<_>, _>>()?;

        Ok(Config {
            url: args.url.clone(),
            jenkins_user,
            id_rsa: args.id_rsa.clone(),
            groovy,
            cli: args.cli,
            certificate_check: if args.no_certificate_check { CertCheck::Skip } else { CertCheck::Verify },
            known_hosts,
            cli_jar,
            envs,
            master,
            max_on_demand: args.max_num_of_slaves_in_env,
            max_spot: args.max_num_of_spot_slaves_in_env,
            loop_counter: args.loop_counter,
            max_run: Duration::from_secs_f64(args.max_minutes * 60.0),
            pass_interval: Duration::from_secs_f64(args.pass_interval),
            slave_name: args.slave_name.clone(),
            owner_email: args.owner_email.clone(),
            max_spot_price: args.max_spot_price.clone(),
            instance_types,
            required_ip_list,
            idle_minutes: args.idle_minutes,
            hourly_billing: args.hourly_billing,
            zombie_after: (args.zombie_minutes > 0).then(|| Duration::from_secs(u64::from(args.zombie_minutes) * 60)),
            spot_fallback: args.spot_fallback,
            sqs_account_id: args.aws_sqs_account_id.clone(),
            sqs_region: args.aws_sqs_region.clone(),
            sqs_queue: args.sqs_queue.clone(),
            sqs_policy: crate::requests::Policy {
                actions: sqs_actions,
                jobs: args.sqs_jobs.as_deref().map(crate::requests::Policy::parse_jobs).transpose().map_err(bad)?,
                senders: args
                    .sqs_senders
                    .as_deref()
                    .map(crate::requests::Policy::parse_senders)
                    .transpose()
                    .map_err(bad)?,
            },
            scm_host: args.scm_host.trim().to_string(),
            manage_security_group: !args.skip_security_group,
            gc_job: Some(args.gc_job.trim().to_string()).filter(|j| !j.is_empty()),
            master_region: args.jenkins_master_region.clone(),
            debug: args.debug,
            dry_run: args.dry_run,
            aws_timeout: Duration::from_secs(args.aws_timeout),
            jenkins_timeout: Duration::from_secs(args.jenkins_timeout),
            cli_output_limit: args.max_cli_output_mb << 20,
        })
    }

    /// `--required_ip_list` as (port, normalised CIDR) pairs.
    pub fn required_rules(&self) -> Vec<(u16, String)> {
        self.required_ip_list.iter().map(|r| (r.port, r.cidr.clone())).collect()
    }

    pub fn env_names(&self) -> BTreeSet<String> {
        self.envs.keys().cloned().collect()
    }
}

fn check_private_key(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("--id_rsa {}: {e}", path.display())))?;
    if !text.contains("PRIVATE KEY-----") {
        return Err(bad(format!("--id_rsa {}: not a private key (no PRIVATE KEY block)", path.display())));
    }
    Ok(())
}

/// `ENV:ami-id,ENV:ami-id`. Any AMI id length is accepted (today's are 21
/// characters, the original cut them to 12).
pub fn parse_ami_ids(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (env, ami) = word.split_once(':').ok_or_else(|| bad(format!("--ami_ids: {word:?} is not ENV:ami-id")))?;
        let hex = ami.strip_prefix("ami-").unwrap_or("");
        if env.is_empty() || hex.is_empty() || !hex.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad(format!("--ami_ids: {word:?} is not ENV:ami-id")));
        }
        if out.iter().any(|(e, _): &(String, String)| e == env) {
            return Err(bad(format!("--ami_ids: env {env:?} is given twice")));
        }
        out.push((env.to_string(), ami.to_string()));
    }
    if out.is_empty() {
        return Err(bad("--ami_ids: expected at least one ENV:ami-id"));
    }
    Ok(out)
}

/// `PORT:CIDR`, e.g. `443:0.0.0.0/0` or `22:1.2.3.4/32`. The CIDR is
/// normalised as EC2 stores it (`1.2.3.4/24` → `1.2.3.0/24`), or the rule
/// would never match the one EC2 holds and be revoked and added every round.
pub fn parse_ip_rule(word: &str) -> Result<IpRule, ConfigError> {
    let err = || bad(format!("--required_ip_list: {word:?} is not PORT:CIDR (e.g. 443:0.0.0.0/0)"));
    let (port, cidr) = word.split_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(err)?;
    let (addr, bits) = cidr.split_once('/').ok_or_else(err)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
    let bits: u8 = bits.parse().map_err(|_| err())?;
    if bits > 32 {
        return Err(err());
    }
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
    let network = Ipv4Addr::from(u32::from(addr) & mask);
    Ok(IpRule { port, cidr: format!("{network}/{bits}"), host_bits: network != addr })
}

/// Parses environment.json (SPEC A3); errors name the key at fault. Unknown
/// extra keys are allowed.
pub fn parse_environment(text: &str) -> Result<(MasterConfig, BTreeMap<String, EnvConfig>), String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let master = field(&root, "", "jenkins-master")?;
    let master = MasterConfig {
        sg_name: string(master, "jenkins-master", "jenkins-master-sg-name")?,
        sg_id: string(master, "jenkins-master", "jenkins-master-sg-id")?,
    };
    let envs_value = field(&root, "", "environments")?;
    let envs_obj = envs_value.as_object().ok_or("key environments: expected an object")?;
    if envs_obj.is_empty() {
        return Err("key environments: no env defined".into());
    }
    let mut envs = BTreeMap::new();
    for (name, env) in envs_obj {
        let at = format!("environments.{name}");
        if name.contains('_') || name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!("key {at}: env names may contain '-' but not '_' or blanks"));
        }
        let account_id = string(env, &at, "account-id")?;
        if account_id.len() != 12 || !account_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("key {at}.account-id: {account_id:?} is not a 12-digit AWS account id"));
        }
        let subnets_value = field(env, &at, "vpcsubnet")?;
        let subnets_arr = subnets_value.as_array().ok_or_else(|| format!("key {at}.vpcsubnet: expected a list"))?;
        let mut subnets = Vec::new();
        for (i, s) in subnets_arr.iter().enumerate() {
            let sat = format!("{at}.vpcsubnet[{i}]");
            subnets.push(Subnet { id: string(s, &sat, "id")?, az: string(s, &sat, "az")? });
        }
        if subnets.is_empty() {
            return Err(format!("key {at}.vpcsubnet: at least one subnet is needed"));
        }
        envs.insert(
            name.clone(),
            EnvConfig {
                name: name.clone(),
                account_id,
                region: string(env, &at, "region")?,
                vpc_id: string(env, &at, "vpcid")?,
                agent_sg: string(env, &at, "jenkins-sg")?,
                instance_profile: string(env, &at, "instance-profile")?,
                subnets,
                jenkins_url: string(env, &at, "jenkins_url")?,
                ami: None,
            },
        );
    }
    Ok((master, envs))
}

fn field<'a>(v: &'a Value, at: &str, key: &str) -> Result<&'a Value, String> {
    let path = if at.is_empty() { key.to_string() } else { format!("{at}.{key}") };
    v.as_object()
        .ok_or_else(|| format!("key {}: expected an object", if at.is_empty() { "(top level)" } else { at }))?
        .get(key)
        .ok_or_else(|| format!("key {path}: missing"))
}

fn string(v: &Value, at: &str, key: &str) -> Result<String, String> {
    match field(v, at, key)? {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(format!("key {at}.{key}: expected a non-empty string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{ "jenkins-master": { "jenkins-master-sg-name": "jenkins_master", "jenkins-master-sg-id": "sg-0master" },
      "extra": 1,
      "environments": { "my-test-env": { "account-id": "123456789012", "region": "us-east-2", "vpcid": "vpc-1",
        "jenkins-sg": "sg-agents", "instance-profile": "jenkins-cloud", "unknown": true,
        "vpcsubnet": [ {"id": "subnet-a", "az": "us-east-2a"}, {"id": "subnet-b", "az": "us-east-2b"} ],
        "jenkins_url": "https://jenkins.example.com/" } } }"#;

    #[test]
    fn parses_the_spec_example_and_ignores_unknown_keys() {
        let (master, envs) = parse_environment(GOOD).unwrap();
        assert_eq!(master.sg_name, "jenkins_master");
        let env = &envs["my-test-env"];
        assert_eq!(env.subnets.len(), 2);
        assert_eq!(env.instance_profile_arn(), "arn:aws:iam::123456789012:instance-profile/jenkins-cloud");
    }

    #[test]
    fn missing_key_is_named() {
        let text = GOOD.replace(r#""region": "us-east-2","#, "");
        let err = parse_environment(&text).unwrap_err();
        assert_eq!(err, "key environments.my-test-env.region: missing");
        let err = parse_environment(&GOOD.replace("jenkins-master-sg-id", "x")).unwrap_err();
        assert_eq!(err, "key jenkins-master.jenkins-master-sg-id: missing");
        let err = parse_environment(&GOOD.replace(r#""id": "subnet-b""#, r#""id": 3"#)).unwrap_err();
        assert_eq!(err, "key environments.my-test-env.vpcsubnet[1].id: expected a non-empty string");
    }

    #[test]
    fn ill_formed_json_and_bad_env_names_are_refused() {
        assert!(parse_environment("{").unwrap_err().starts_with("not valid JSON"));
        let err = parse_environment(&GOOD.replace("my-test-env", "my_env")).unwrap_err();
        assert!(err.contains("may contain '-' but not '_'"), "{err}");
    }

    #[test]
    fn ami_ids_of_any_length() {
        let got = parse_ami_ids("dev:ami-0123456789abcdef0, prod:ami-12345678").unwrap();
        assert_eq!(got[0], ("dev".into(), "ami-0123456789abcdef0".into()));
        assert_eq!(got[1].1, "ami-12345678");
        assert!(parse_ami_ids("dev").is_err());
        assert!(parse_ami_ids("dev:ami-").is_err());
        assert!(parse_ami_ids("dev:ami-1,dev:ami-2").is_err());
        assert!(parse_ami_ids("").is_err());
    }

    #[test]
    fn ip_rules_are_validated() {
        assert_eq!(
            parse_ip_rule("443:0.0.0.0/0").unwrap(),
            IpRule { port: 443, cidr: "0.0.0.0/0".into(), host_bits: false }
        );
        // As EC2 stores it, or the existing rule would be revoked.
        let r = parse_ip_rule("22:1.2.3.4/24").unwrap();
        assert_eq!((r.cidr.as_str(), r.host_bits), ("1.2.3.0/24", true));
        assert_eq!(parse_ip_rule("22:10.1.2.3/32").unwrap().cidr, "10.1.2.3/32");
        for bad in
            ["443", "x:0.0.0.0/0", "0:1.2.3.4/32", "22:1.2.3/32", "22:1.2.3.4/33", "22:1.2.3.4", "70000:1.2.3.4/32"]
        {
            assert!(parse_ip_rule(bad).is_err(), "{bad} accepted");
        }
    }
}
