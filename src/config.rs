//! Raw flags + environment.json → a validated `Config`. Everything a user can
//! get wrong is caught here, before any AWS or Jenkins call, and reported as
//! one line that names the flag or key at fault.
//!
//! `Config` is grouped by concern, so each stage can be handed only its part:
//! [`JenkinsConfig`] (the CLI), [`FleetConfig`] (the agents), [`AwsConfig`],
//! the optional [`SecurityGroupConfig`] and [`SqsConfig`], and [`RunBounds`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::cli::{Args, CliTransport};
use crate::jenkins::cli::{is_loopback, url_host};
use crate::jenkins::host_key::KnownHostsFile;
use crate::label::{parse_label, InstanceTypes};
use crate::model::Label;
use crate::periodic::sqs_requests::validate::{self, Policy};
use crate::tls::CertCheck;
use crate::warm::{parse_spare, parse_warm, Spare, WarmPool, WarmWord};

/// The Groovy dump script shipped inside the binary (`--groovy` overrides it).
/// The longest `--aws_timeout` or `--jenkins_timeout` taken.
const MAX_TIMEOUT_SECONDS: u64 = 3600;

pub const BUNDLED_GROOVY: &str = include_str!("../jenkins/get_queue_jobs.groovy");

/// Why the flags or environment.json cannot be run with; each names the flag
/// or key at fault, on one line. Nothing in AWS or Jenkins was touched.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value is missing, malformed or out of range.
    #[error("{0}")]
    Flag(String),
    /// A flag names a file that cannot be read, or that is not what the flag
    /// needs.
    #[error("{flag} {}: {reason}", path.display())]
    File { flag: &'static str, path: PathBuf, reason: String },
    /// The channel to Jenkins would go unchecked: refused unless the flags
    /// that accept or pin it are given.
    #[error("{0}")]
    Insecure(String),
    /// environment.json cannot be read or is not as SPEC A3 has it.
    #[error("{}: {source}", path.display())]
    Environment {
        path: PathBuf,
        #[source]
        source: EnvironmentError,
    },
    /// `--ami_ids` names an env that environment.json does not define.
    #[error("--ami_ids: env {env:?} is not in {} (it has: {known})", path.display())]
    UnknownEnv { env: String, path: PathBuf, known: String },
}

fn flag(msg: impl Into<String>) -> ConfigError {
    ConfigError::Flag(msg.into())
}

/// What is wrong with environment.json.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A key is missing or holds the wrong thing; `key` is its dotted path
    /// (`environments.dev.vpcsubnet[1].id`).
    #[error("key {key}: {problem}")]
    Key { key: String, problem: String },
}

fn key_error(key: impl Into<String>, problem: impl Into<String>) -> EnvironmentError {
    EnvironmentError::Key { key: key.into(), problem: problem.into() }
}

/// One subnet of an env.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(expecting = "an object")]
pub struct Subnet {
    #[serde(deserialize_with = "non_empty")]
    pub id: String,
    #[serde(deserialize_with = "non_empty")]
    pub az: String,
}

/// One env of environment.json: an AWS account + region where agents live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(expecting = "an object")]
pub struct EnvConfig {
    /// The key it is filed under in `environments`.
    #[serde(skip)]
    pub name: String,
    #[serde(rename = "account-id", deserialize_with = "non_empty")]
    pub account_id: String,
    #[serde(deserialize_with = "non_empty")]
    pub region: String,
    #[serde(rename = "vpcid", deserialize_with = "non_empty")]
    pub vpc_id: String,
    /// Security group of the agents (`jenkins-sg`).
    #[serde(rename = "jenkins-sg", deserialize_with = "non_empty")]
    pub agent_sg: String,
    #[serde(rename = "instance-profile", deserialize_with = "non_empty")]
    pub instance_profile: String,
    #[serde(rename = "vpcsubnet", deserialize_with = "list")]
    pub subnets: Vec<Subnet>,
    #[serde(deserialize_with = "non_empty")]
    pub jenkins_url: String,
    /// Current AMI, from `--ami_ids`; `None`: nothing is created here.
    #[serde(skip)]
    pub ami: Option<String>,
}

impl EnvConfig {
    pub fn instance_profile_arn(&self) -> String {
        format!("arn:aws:iam::{}:instance-profile/{}", self.account_id, self.instance_profile)
    }
}

/// The master's identity from environment.json.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(expecting = "an object")]
pub struct MasterConfig {
    /// Also the IAM role name assumed in every env.
    #[serde(rename = "jenkins-master-sg-name", deserialize_with = "non_empty")]
    pub sg_name: String,
    #[serde(rename = "jenkins-master-sg-id", deserialize_with = "non_empty")]
    pub sg_id: String,
}

/// environment.json as SPEC A3 has it; unknown extra keys are allowed.
#[derive(Debug, serde::Deserialize)]
#[serde(expecting = "an object")]
struct EnvironmentFile {
    #[serde(rename = "jenkins-master", deserialize_with = "object_only")]
    master: MasterConfig,
    #[serde(deserialize_with = "object")]
    environments: BTreeMap<String, EnvConfig>,
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

/// The master's CLI: how to reach it, as whom, and what it may print.
#[derive(Debug, Clone)]
pub struct JenkinsConfig {
    pub url: String,
    pub user: String,
    pub id_rsa: PathBuf,
    /// The dump script's text.
    pub groovy: String,
    pub cli: CliTransport,
    /// Of the Jenkins URL's certificate (`--no_certificate_check`: `Skip`).
    pub certificate_check: CertCheck,
    /// `--known_hosts`, read and checked at start.
    pub known_hosts: Option<KnownHostsFile>,
    /// `--cli_jar`, absolute: no jar is downloaded.
    pub cli_jar: Option<PathBuf>,
    pub timeout: Duration,
    /// Bytes one CLI command may print (`--max_cli_output_mb`).
    pub output_limit: u64,
}

/// The agents: where they live, how they are launched, how many may run and
/// when they go.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub envs: BTreeMap<String, EnvConfig>,
    /// The EC2 `Name` tag that marks our agents.
    pub slave_name: String,
    pub owner_email: String,
    pub max_on_demand: u32,
    pub max_spot: u32,
    pub max_spot_price: String,
    /// Instance types a label may ask for (`--instance_types`).
    pub instance_types: InstanceTypes,
    /// The dump script's idle policy (SPEC A6).
    pub idle_minutes: u32,
    pub hourly_billing: bool,
    /// Running agents that are no node this long after launch are terminated.
    pub zombie_after: Option<Duration>,
    pub spot_fallback: bool,
    /// The warm pools (`--warm`), labels checked.
    pub warm: Vec<WarmPool>,
    /// The spare executors (`--spare`), labels checked.
    pub spare: Vec<Spare>,
}

/// What every AWS client shares.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The IAM role assumed in every env (`jenkins-master-sg-name`).
    pub role_name: String,
    /// The master's region: its security group, and STS when the process
    /// environment names no region.
    pub master_region: String,
    pub timeout: Duration,
    /// The EC2 calls one env may have in flight at once while acting.
    pub max_parallel_calls: usize,
    /// Whether each account and region's EC2 requests are paced after a
    /// throttle (`--no_rate_limiter` turns it off).
    pub rate_limiter: bool,
}

/// The master's security group, when it is managed (not `--skip_security_group`).
#[derive(Debug, Clone)]
pub struct SecurityGroupConfig {
    /// `jenkins-master-sg-id`, in the master's region.
    pub group_id: String,
    pub scm_host: String,
    pub required_ip_list: Vec<IpRule>,
}

impl SecurityGroupConfig {
    /// `--required_ip_list` as (port, normalised CIDR) pairs.
    pub fn required_rules(&self) -> Vec<(u16, String)> {
        self.required_ip_list.iter().map(|r| (r.port, r.cidr.clone())).collect()
    }
}

/// The build-request queue, when SQS is on (an account and a region given).
#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub account_id: String,
    pub region: String,
    pub queue: String,
    /// What messages may run and who may send them (never an action on the
    /// deny-list).
    pub policy: Policy,
}

/// How long a run lasts.
#[derive(Debug, Clone)]
pub struct RunBounds {
    pub loop_counter: u32,
    /// No pass starts once the run is this old (`--max_minutes`).
    pub max_run: Duration,
    pub pass_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub jenkins: JenkinsConfig,
    pub fleet: FleetConfig,
    pub aws: AwsConfig,
    /// `None`: `--skip_security_group`.
    pub security_group: Option<SecurityGroupConfig>,
    /// `None`: SQS off.
    pub sqs: Option<SqsConfig>,
    /// The queue of EC2 events read in every env (`--interruption_queue`);
    /// `None`: off.
    pub interruption_queue: Option<String>,
    /// `None`: no GC trigger.
    pub gc_job: Option<String>,
    pub run: RunBounds,
    pub debug: bool,
    pub dry_run: bool,
    /// Worth a warning when the run starts, though not an error.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let jenkins_user = args.jenkins_user.clone().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
            flag("--jenkins_user (or $JENKINS_USER) is required: the Jenkins account whose key --id_rsa is")
        })?;
        if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
            return Err(flag(format!("--url {:?}: must start with http:// or https://", args.url)));
        }
        let host = url_host(&args.url).ok_or_else(|| flag(format!("--url {:?}: no host", args.url)))?;
        if args.url.starts_with("http://") && !is_loopback(&args.url) {
            if !args.allow_insecure_http {
                return Err(ConfigError::Insecure(format!(
                    "--url {}: plain http to {host}, which is not this machine: anyone on the way could read and \
                     change what Jenkins says (use https, or pass --allow_insecure_http to accept that)",
                    args.url
                )));
            }
            if args.cli == CliTransport::Jar && args.cli_jar.is_none() {
                return Err(ConfigError::Insecure(format!(
                    "--cli jar would download jenkins-cli.jar over plain http from {host}, where anyone on the way \
                     could replace it: give --cli_jar PATH (the master's own, e.g. \
                     /var/cache/jenkins/war/WEB-INF/lib/cli-VERSION.jar), or use https or --cli ssh"
                )));
            }
        }
        let known_hosts = match &args.known_hosts {
            None => None,
            Some(path) => Some(KnownHostsFile::read(path).map_err(|reason| ConfigError::File {
                flag: "--known_hosts",
                path: path.clone(),
                reason,
            })?),
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
        if let Some(unchecked) = unchecked {
            if known_hosts.is_none() {
                return Err(ConfigError::Insecure(format!(
                    "{unchecked} needs --known_hosts FILE: over an unchecked channel Jenkins' X-Instance-Identity \
                     proves nothing, so its SSH host key must be pinned by a known_hosts line (see docs/operating.md, \
                     \"Jenkins' SSH host key\")"
                )));
            }
            if args.cli == CliTransport::Jar && args.cli_jar.is_none() {
                return Err(ConfigError::Insecure(format!(
                    "--cli jar with {unchecked} would run a jenkins-cli.jar fetched over an unchecked channel: give \
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
                Some(found.map_err(|e| file_error("--cli_jar", path, e))?)
            }
        };
        check_private_key(&args.id_rsa)?;
        let groovy = match &args.groovy {
            None => BUNDLED_GROOVY.to_string(),
            Some(path) => std::fs::read_to_string(path).map_err(|e| file_error("--groovy", path, e))?,
        };
        if args.owner_email.trim().is_empty() {
            return Err(flag("--owner_email must not be empty"));
        }
        match args.max_spot_price.parse::<f64>() {
            Ok(p) if p > 0.0 && p.is_finite() => {}
            _ => return Err(flag(format!("--max_spot_price {:?}: not a positive price in USD", args.max_spot_price))),
        }
        if !(args.max_minutes > 0.0 && args.max_minutes.is_finite() && args.max_minutes <= 24.0 * 60.0) {
            return Err(flag(format!(
                "--max_minutes {}: must be a number of minutes > 0 (at most a day)",
                args.max_minutes
            )));
        }
        if !(args.pass_interval >= 0.0 && args.pass_interval.is_finite()) {
            return Err(flag("--pass_interval must be a number of seconds ≥ 0"));
        }
        if args.aws_timeout < 3 || args.jenkins_timeout == 0 {
            return Err(flag("--aws_timeout must be at least 3 seconds and --jenkins_timeout at least 1"));
        }
        // An hour is past any pass; far larger ones overflow the clock's
        // arithmetic when a deadline is set.
        if args.aws_timeout > MAX_TIMEOUT_SECONDS || args.jenkins_timeout > MAX_TIMEOUT_SECONDS {
            return Err(flag(format!(
                "--aws_timeout and --jenkins_timeout must be at most {MAX_TIMEOUT_SECONDS} seconds"
            )));
        }
        if args.max_parallel_calls == 0 {
            return Err(flag("--max_parallel_calls must be at least 1"));
        }
        if !(1..=4096).contains(&args.max_cli_output_mb) {
            return Err(flag("--max_cli_output_mb must be between 1 and 4096 (MiB)"));
        }
        if args.idle_minutes == 0 {
            return Err(flag("--idle_minutes must be at least 1"));
        }
        if args.slave_name.trim().is_empty() {
            return Err(flag("--slave_name must not be empty"));
        }
        if args.aws_sqs_account_id.is_some() && args.aws_sqs_region.is_none() {
            return Err(flag("--aws_sqs_account_id needs --aws_sqs_region"));
        }

        if let Some(account) = &args.aws_sqs_account_id {
            if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
                return Err(flag(format!("--aws_sqs_account_id {account:?}: not a 12-digit AWS account id")));
            }
        }
        let sqs_actions: Vec<String> =
            args.sqs_actions.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
        for action in &sqs_actions {
            if !action.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                return Err(flag(format!("--sqs_actions: {action:?} is not a Jenkins CLI command name")));
            }
            if validate::is_denied(action) {
                return Err(flag(format!(
                    "--sqs_actions: {action:?} is on the deny-list (delete, groovy, install, node)"
                )));
            }
        }
        let gc_job = args.gc_job.trim();
        if gc_job.starts_with('-') || gc_job.starts_with('@') {
            return Err(flag(format!("--gc_job {gc_job:?}: a job name cannot start with - or @")));
        }
        if args.scm_host.trim().is_empty() && !args.skip_security_group {
            return Err(flag("--scm_host must not be empty (or give --skip_security_group)"));
        }

        let environment_error = |source| ConfigError::Environment { path: args.environment.clone(), source };
        let text = std::fs::read_to_string(&args.environment).map_err(|e| environment_error(e.into()))?;
        let (master, mut envs) = parse_environment(&text).map_err(environment_error)?;
        for (env, ami) in parse_ami_ids(&args.ami_ids)? {
            let known = envs.keys().cloned().collect::<Vec<_>>().join(", ");
            let e = envs.get_mut(&env).ok_or_else(|| ConfigError::UnknownEnv {
                env: env.clone(),
                path: args.environment.clone(),
                known,
            })?;
            e.ami = Some(ami);
        }
        let instance_types = match &args.instance_types {
            None => InstanceTypes::default(),
            Some(list) => InstanceTypes::parse(list).map_err(flag)?,
        };
        let warm = warm_pools(&args.warm, &envs, &instance_types)?;
        let spare = spares(&args.spare, &envs, &instance_types)?;
        let required_ip_list = args.required_ip_list.iter().map(|w| parse_ip_rule(w)).collect::<Result<Vec<_>, _>>()?;
        let warnings = required_ip_list
            .iter()
            .filter(|r| r.host_bits)
            .map(|rule| {
                format!(
                    "--required_ip_list: the address for port {} had host bits set; the rule kept is {} (as EC2 \
                     stores it)",
                    rule.port, rule.cidr
                )
            })
            .collect();
        let sqs_policy = Policy {
            actions: sqs_actions,
            jobs: args.sqs_jobs.as_deref().map(Policy::parse_jobs).transpose().map_err(flag)?,
            senders: args.sqs_senders.as_deref().map(Policy::parse_senders).transpose().map_err(flag)?,
        };

        Ok(Config {
            jenkins: JenkinsConfig {
                url: args.url.clone(),
                user: jenkins_user,
                id_rsa: args.id_rsa.clone(),
                groovy,
                cli: args.cli,
                certificate_check: if args.no_certificate_check { CertCheck::Skip } else { CertCheck::Verify },
                known_hosts,
                cli_jar,
                timeout: Duration::from_secs(args.jenkins_timeout),
                output_limit: args.max_cli_output_mb << 20,
            },
            fleet: FleetConfig {
                envs,
                slave_name: args.slave_name.clone(),
                owner_email: args.owner_email.clone(),
                max_on_demand: args.max_num_of_slaves_in_env,
                max_spot: args.max_num_of_spot_slaves_in_env,
                max_spot_price: args.max_spot_price.clone(),
                instance_types,
                idle_minutes: args.idle_minutes,
                hourly_billing: args.hourly_billing,
                zombie_after: (args.zombie_minutes > 0)
                    .then(|| Duration::from_secs(u64::from(args.zombie_minutes) * 60)),
                spot_fallback: args.spot_fallback,
                warm,
                spare,
            },
            aws: AwsConfig {
                role_name: master.sg_name,
                master_region: args.jenkins_master_region.clone(),
                timeout: Duration::from_secs(args.aws_timeout),
                max_parallel_calls: args.max_parallel_calls,
                rate_limiter: !args.no_rate_limiter,
            },
            security_group: (!args.skip_security_group).then(|| SecurityGroupConfig {
                group_id: master.sg_id,
                scm_host: args.scm_host.trim().to_string(),
                required_ip_list,
            }),
            // An account without a region is refused above; a region alone
            // leaves SQS off, as the original did.
            sqs: args.aws_sqs_account_id.clone().zip(args.aws_sqs_region.clone()).map(|(account_id, region)| {
                SqsConfig { account_id, region, queue: args.sqs_queue.clone(), policy: sqs_policy }
            }),
            interruption_queue: args.interruption_queue.clone().filter(|q| !q.trim().is_empty()),
            gc_job: Some(gc_job.to_string()).filter(|j| !j.is_empty()),
            run: RunBounds {
                loop_counter: args.loop_counter,
                max_run: Duration::from_secs_f64(args.max_minutes * 60.0),
                pass_interval: Duration::from_secs_f64(args.pass_interval),
            },
            debug: args.debug,
            dry_run: args.dry_run,
            warnings,
        })
    }
}

impl FleetConfig {
    pub fn env_names(&self) -> BTreeSet<String> {
        self.envs.keys().cloned().collect()
    }
}

fn file_error(flag: &'static str, path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError::File { flag, path: path.to_path_buf(), reason: e.to_string() }
}

fn check_private_key(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error("--id_rsa", path, e))?;
    if !text.contains("PRIVATE KEY-----") {
        return Err(ConfigError::File {
            flag: "--id_rsa",
            path: path.to_path_buf(),
            reason: "not a private key (no PRIVATE KEY block)".into(),
        });
    }
    Ok(())
}

/// The `--warm` words as pools: each label must name one env of
/// environment.json that has an AMI, be no spot label (a one-time spot
/// agent cannot stop) and ask for an admitted instance type; a label given
/// twice is refused too.
pub fn warm_pools(
    words: &[String],
    envs: &BTreeMap<String, EnvConfig>,
    instance_types: &InstanceTypes,
) -> Result<Vec<WarmPool>, ConfigError> {
    let why_not_spot = "one-time spot agents cannot be stopped, so cannot be kept warm";
    let checked = label_words("--warm", words, parse_warm, why_not_spot, envs, instance_types)?;
    Ok(checked.into_iter().map(|(label, w)| WarmPool { label, size: w.size, hours: w.hours }).collect())
}

/// The `--spare` words, checked as `--warm`'s are (a spare is refilled by
/// starting a stopped agent, which a one-time spot agent cannot be), with
/// at least one executor each.
pub fn spares(
    words: &[String],
    envs: &BTreeMap<String, EnvConfig>,
    instance_types: &InstanceTypes,
) -> Result<Vec<Spare>, ConfigError> {
    let why_not_spot = "one-time spot agents cannot be stopped and restarted, so cannot be kept spare";
    let checked = label_words("--spare", words, parse_spare, why_not_spot, envs, instance_types)?;
    Ok(checked.into_iter().map(|(label, w)| Spare { label, executors: w.size, hours: w.hours }).collect())
}

/// `LABEL=N[@HH-HH]` words of `flag`, each label checked: one env of
/// environment.json with an AMI, no spot label, an admitted instance type,
/// not given twice.
fn label_words(
    flag_name: &str,
    words: &[String],
    parse: fn(&str) -> Result<WarmWord, String>,
    why_not_spot: &str,
    envs: &BTreeMap<String, EnvConfig>,
    instance_types: &InstanceTypes,
) -> Result<Vec<(Label, WarmWord)>, ConfigError> {
    let known: BTreeSet<String> = envs.keys().cloned().collect();
    let mut checked: Vec<(Label, WarmWord)> = Vec::new();
    for word in words {
        let w = parse(word).map_err(flag)?;
        let refuse = |why: String| flag(format!("{flag_name} {word:?}: {why}"));
        let label = parse_label(&w.label, &known).map_err(|e| refuse(e.to_string()))?;
        if label.pricing.is_spot() {
            return Err(refuse(format!("label {} is a spot label; {why_not_spot}", label.raw)));
        }
        if !instance_types.allows(&label.instance_type) {
            return Err(refuse(format!("{} is not admitted by --instance_types", label.instance_type)));
        }
        if envs.get(&label.env).and_then(|e| e.ami.as_ref()).is_none() {
            return Err(refuse(format!("env {} has no AMI in --ami_ids, so no agent can be created there", label.env)));
        }
        if checked.iter().any(|(l, _)| l.raw == label.raw) {
            return Err(refuse(format!("label {} is given twice", label.raw)));
        }
        checked.push((label, w));
    }
    Ok(checked)
}

/// `ENV:ami-id,ENV:ami-id`. Any AMI id length is accepted (today's are 21
/// characters, the original cut them to 12).
pub fn parse_ami_ids(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (env, ami) = word.split_once(':').ok_or_else(|| flag(format!("--ami_ids: {word:?} is not ENV:ami-id")))?;
        let hex = ami.strip_prefix("ami-").unwrap_or("");
        if env.is_empty() || hex.is_empty() || !hex.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(flag(format!("--ami_ids: {word:?} is not ENV:ami-id")));
        }
        if out.iter().any(|(e, _): &(String, String)| e == env) {
            return Err(flag(format!("--ami_ids: env {env:?} is given twice")));
        }
        out.push((env.to_string(), ami.to_string()));
    }
    if out.is_empty() {
        return Err(flag("--ami_ids: expected at least one ENV:ami-id"));
    }
    Ok(out)
}

/// `PORT:CIDR`, e.g. `443:0.0.0.0/0` or `22:1.2.3.4/32`. The CIDR is
/// normalised as EC2 stores it (`1.2.3.4/24` → `1.2.3.0/24`), or the rule
/// would never match the one EC2 holds and be revoked and added every round.
pub fn parse_ip_rule(word: &str) -> Result<IpRule, ConfigError> {
    let err = || flag(format!("--required_ip_list: {word:?} is not PORT:CIDR (e.g. 443:0.0.0.0/0)"));
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
pub fn parse_environment(text: &str) -> Result<(MasterConfig, BTreeMap<String, EnvConfig>), EnvironmentError> {
    // Syntax first, so its error keeps serde_json's line and column.
    let root: serde_json::Value = serde_json::from_str(text).map_err(EnvironmentError::Json)?;
    let Strict(file) = serde_path_to_error::deserialize::<_, Strict<EnvironmentFile>>(&root).map_err(|e| {
        let at = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde words a missing field at its parent: name the field itself.
        if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            return key_error(if at == "." { field.to_string() } else { format!("{at}.{field}") }, "missing");
        }
        // `invalid type: integer `3`, expected a non-empty string`: what the
        // key should hold is the news; the expectation is always last.
        let problem = match message.rsplit_once(", expected ") {
            Some((_, expected)) => format!("expected {expected}"),
            None => message,
        };
        key_error(if at == "." { "(top level)".to_string() } else { at }, problem)
    })?;
    if file.environments.is_empty() {
        return Err(key_error("environments", "no env defined"));
    }
    let mut envs = file.environments;
    for (name, env) in &mut envs {
        let at = format!("environments.{name}");
        if name.contains('_') || name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(key_error(at, "env names may contain '-' but not '_' or blanks"));
        }
        if env.account_id.len() != 12 || !env.account_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(key_error(
                format!("{at}.account-id"),
                format!("{:?} is not a 12-digit AWS account id", env.account_id),
            ));
        }
        if env.subnets.is_empty() {
            return Err(key_error(format!("{at}.vpcsubnet"), "at least one subnet is needed"));
        }
        env.name = name.clone();
    }
    Ok((file.master, envs))
}

/// A string with something in it.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct NonEmpty;
    impl Visitor<'_> for NonEmpty {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-empty string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
            if s.trim().is_empty() {
                Err(E::invalid_value(de::Unexpected::Str(s), &self))
            } else {
                Ok(s.to_string())
            }
        }
    }
    d.deserialize_any(NonEmpty)
}

/// A JSON list of objects, worded as environment.json's users know it.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct List<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(Strict(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(List(std::marker::PhantomData))
}

/// A JSON object of named objects, worded as environment.json's users know it.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<BTreeMap<String, T>, D::Error> {
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = BTreeMap<String, T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, Strict(value))) = map.next_entry()? {
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Object(std::marker::PhantomData))
}

/// A struct read only from a JSON object: serde would also fill one from a
/// list, by position, which environment.json's readers would not expect.
struct Strict<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Strict<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object_only(d).map(Strict)
    }
}

fn object_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    T::deserialize(ObjectOnly(d))
}

/// Asks for a map where a struct is asked for; everything else as it was.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
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
    fn warm_pools_need_a_known_env_with_an_ami_and_no_spot_label() {
        let (_, mut envs) = parse_environment(GOOD).unwrap();
        let types = InstanceTypes::default();
        let words = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let e = warm_pools(&words(&["my-test-env=2"]), &envs, &types).unwrap_err().to_string();
        assert!(e.contains("has no AMI in --ami_ids"), "{e}");
        envs.get_mut("my-test-env").unwrap().ami = Some("ami-1".into());
        let pools = warm_pools(&words(&["my-test-env=2@07-19", "my-test-env_shared=1"]), &envs, &types).unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!((pools[0].label.raw.as_str(), pools[0].size), ("my-test-env", 2));
        assert_eq!(pools[0].hours, Some(crate::warm::Hours { from: 7, to: 19 }));
        assert_eq!(pools[1].label.pricing, crate::model::Pricing::Shared);
        for (word, says) in [
            (vec!["my-test-env_spot=1"], "one-time spot agents cannot be stopped"),
            (vec!["other-env=1"], "names no known environment"),
            (vec!["my-test-env_x2iedn.32xlarge=1"], "not admitted by --instance_types"),
            (vec!["my-test-env=1", "my-test-env=2"], "given twice"),
            (vec!["my-test-env=1@19-07x"], "is not an hour"),
        ] {
            let e = warm_pools(&words(&word), &envs, &types).unwrap_err().to_string();
            assert!(e.starts_with("--warm ") && e.contains(says) && !e.contains('\n'), "{word:?}: {e}");
        }
    }

    #[test]
    fn spares_are_checked_as_warm_pools_are_and_keep_at_least_one_executor() {
        let (_, mut envs) = parse_environment(GOOD).unwrap();
        let types = InstanceTypes::default();
        let words = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let e = spares(&words(&["my-test-env=1"]), &envs, &types).unwrap_err().to_string();
        assert!(e.contains("has no AMI in --ami_ids"), "{e}");
        envs.get_mut("my-test-env").unwrap().ami = Some("ami-1".into());
        let got = spares(&words(&["my-test-env=1@07-19", "my-test-env_shared=3"]), &envs, &types).unwrap();
        assert_eq!((got[0].label.raw.as_str(), got[0].executors), ("my-test-env", 1));
        assert_eq!(got[0].hours, Some(crate::warm::Hours { from: 7, to: 19 }));
        assert_eq!((got[1].label.pricing, got[1].executors), (crate::model::Pricing::Shared, 3));
        for (word, says) in [
            (vec!["my-test-env_spot=1"], "one-time spot agents cannot be stopped and restarted"),
            (vec!["other-env=1"], "names no known environment"),
            (vec!["my-test-env_x2iedn.32xlarge=1"], "not admitted by --instance_types"),
            (vec!["my-test-env=1", "my-test-env=2"], "given twice"),
            (vec!["my-test-env=0"], "at least 1 idle executor"),
        ] {
            let e = spares(&words(&word), &envs, &types).unwrap_err().to_string();
            assert!(e.starts_with("--spare ") && e.contains(says) && !e.contains('\n'), "{word:?}: {e}");
        }
    }

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
        let err = parse_environment(&text).unwrap_err().to_string();
        assert_eq!(err, "key environments.my-test-env.region: missing");
        let err = parse_environment(&GOOD.replace("jenkins-master-sg-id", "x")).unwrap_err().to_string();
        assert_eq!(err, "key jenkins-master.jenkins-master-sg-id: missing");
        let err = parse_environment(&GOOD.replace(r#""id": "subnet-b""#, r#""id": 3"#)).unwrap_err().to_string();
        assert_eq!(err, "key environments.my-test-env.vpcsubnet[1].id: expected a non-empty string");
    }

    #[test]
    fn ill_formed_json_and_bad_env_names_are_refused() {
        assert!(parse_environment("{").unwrap_err().to_string().starts_with("not valid JSON"));
        let err = parse_environment(&GOOD.replace("my-test-env", "my_env")).unwrap_err().to_string();
        assert!(err.contains("may contain '-' but not '_'"), "{err}");
    }

    #[test]
    fn wrong_shapes_name_the_key_and_what_it_should_hold() {
        let err = |text: &str| parse_environment(text).unwrap_err().to_string();
        assert_eq!(err("[]"), "key (top level): expected an object");
        assert_eq!(
            err(&GOOD.replace(r#""environments": {"#, r#""environments": [], "x": {"#)),
            "key environments: expected an object"
        );
        assert_eq!(
            err(r#"{"jenkins-master": ["jenkins_master", "sg-0master"], "environments": {}}"#),
            "key jenkins-master: expected an object"
        );
        assert_eq!(
            err(&GOOD.replace(r#""environments": {"#, r#""environments": {}, "x": {"#)),
            "key environments: no env defined"
        );
        let subnets = r#"[ {"id": "subnet-a", "az": "us-east-2a"}, {"id": "subnet-b", "az": "us-east-2b"} ]"#;
        assert_eq!(
            err(&GOOD.replace(subnets, r#"{"id": "subnet-a"}"#)),
            "key environments.my-test-env.vpcsubnet: expected a list"
        );
        assert_eq!(
            err(&GOOD.replace(subnets, "[]")),
            "key environments.my-test-env.vpcsubnet: at least one subnet is needed"
        );
        assert_eq!(
            err(&GOOD.replace(subnets, r#"[["subnet-a", "us-east-2a"]]"#)),
            "key environments.my-test-env.vpcsubnet[0]: expected an object"
        );
        assert_eq!(
            err(&GOOD.replace(r#""us-east-2","#, r#"" ","#)),
            "key environments.my-test-env.region: expected a non-empty string"
        );
        assert_eq!(
            err(&GOOD.replace(r#""vpcid": "vpc-1""#, r#""vpcid": null"#)),
            "key environments.my-test-env.vpcid: expected a non-empty string"
        );
        assert_eq!(
            err(&GOOD.replace("123456789012", "1234")),
            r#"key environments.my-test-env.account-id: "1234" is not a 12-digit AWS account id"#
        );
        assert_eq!(err(r#"{"environments": {}}"#), "key jenkins-master: missing");
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
