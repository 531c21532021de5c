//! The outside world a pass talks to: Jenkins through its CLI, one EC2
//! client per env (each with its own assumed-role credentials), EC2 in the
//! master's region for its security group, and the SQS queue.
//!
//! Each is reached through a small trait ([`Ec2`], [`SecurityGroups`],
//! [`Queue`], [`Jenkins`]): the SDK clients and [`JenkinsCli`] implement them
//! for real runs, an in-memory fake (`crate::fake`) for the unit tests of
//! act, the periodic jobs and the reconciler.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws;
use crate::aws::ec2::{Ec2Error, LaunchSpec};
use crate::aws::security_group::SecurityGroupError;
use crate::aws::sqs::{Message, SqsError};
use crate::config::{Config, FleetConfig, JenkinsConfig};
use crate::jenkins::{CliError, CliOutput, JenkinsCli};
use crate::model::Instance;
use crate::plan::security_group::{Held, Rule};

/// What the traits' calls return: a boxed future, so the clients can sit
/// behind `dyn` and one world can hold the SDK's or the fake's.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// EC2 in one env: one describe of our agents per pass, and the few
/// mutations the act step needs.
pub trait Ec2: Send + Sync {
    /// Our agents (every state; terminated ones too, while EC2 lists them).
    fn describe_agents<'a>(&'a self, slave_name: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Ec2Error>>;
    /// Launches up to `count` agents in one call, tagged at launch; returns
    /// the ids of those EC2 launched (at least one).
    fn run_instances<'a>(&'a self, spec: &'a LaunchSpec, count: i32) -> BoxFuture<'a, Result<Vec<String>, Ec2Error>>;
    /// Starts, stops, terminates the instances in one call: all or none.
    fn start<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>>;
    fn stop<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>>;
    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>>;
    /// Makes the named EBS volumes go with the instance.
    fn set_delete_on_termination<'a>(
        &'a self,
        id: &'a str,
        devices: &'a [String],
    ) -> BoxFuture<'a, Result<(), Ec2Error>>;
    fn tag<'a>(&'a self, id: &'a str, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), Ec2Error>>;
}

/// The master's security group: its IPv4 ingress rules, one rule added or
/// revoked at a time.
pub trait SecurityGroups: Send + Sync {
    fn ipv4_rules<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Held>, SecurityGroupError>>;
    fn authorize<'a>(&'a self, group_id: &'a str, rule: &'a Rule) -> BoxFuture<'a, Result<(), SecurityGroupError>>;
    fn revoke<'a>(&'a self, group_id: &'a str, rule: &'a Rule) -> BoxFuture<'a, Result<(), SecurityGroupError>>;
}

/// The build-request queue.
pub trait Queue: Send + Sync {
    fn queue_url<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, Result<String, SqsError>>;
    /// Up to `max` messages; when none is there, waits up to `wait` (whole
    /// seconds, SQS's long poll) for one. What it receives is hidden from
    /// other reads for `visibility` (whole seconds), or for the queue's own
    /// visibility timeout when `None`.
    fn receive<'a>(
        &'a self,
        url: &'a str,
        max: i32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<Message>, SqsError>>;
    fn delete<'a>(&'a self, url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>>;
    /// Makes a received message visible to other readers again at once.
    fn release<'a>(&'a self, url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>>;
}

/// The Jenkins CLI. Blocking (the transports are): callers run it on
/// Tokio's blocking pool.
pub trait Jenkins: Send + Sync {
    fn run(&self, words: &[String], stdin: &[u8]) -> Result<CliOutput, CliError>;
}

/// Runs one CLI command on the blocking pool.
pub async fn run_cli(jenkins: &Arc<dyn Jenkins>, words: Vec<String>, stdin: Vec<u8>) -> Result<CliOutput, CliError> {
    let cli = Arc::clone(jenkins);
    tokio::task::spawn_blocking(move || cli.run(&words, &stdin))
        .await
        .unwrap_or_else(|e| Err(CliError::Task(e.to_string())))
}

/// The wall clock a pass reads (marker ages, record times).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// Tokio's clock from an anchor, so a test's paused time
    /// (`tokio::time::advance`, sleeps that skip ahead) ages markers too.
    Tokio {
        wall: SystemTime,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// Tokio's clock, anchored now.
    pub fn tokio() -> Clock {
        Clock::Tokio { wall: SystemTime::now(), at: tokio::time::Instant::now() }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Tokio { wall, at } => *wall + at.elapsed(),
        }
    }
}

pub struct World {
    pub config: Config,
    /// Where markers, the CLI jar and the CSVs live (the job's workspace).
    pub workdir: PathBuf,
    pub jenkins: Arc<dyn Jenkins>,
    pub ec2: BTreeMap<String, Arc<dyn Ec2>>,
    /// EC2 in the master's own account and region (its security group).
    pub master_ec2: Arc<dyn SecurityGroups>,
    /// The build-request queue's region, when SQS is on.
    pub sqs: Option<Arc<dyn Queue>>,
    /// Each env's queue of EC2 events, when `--interruption_queue` is on.
    pub interruptions: BTreeMap<String, Arc<crate::interruption::EventQueue>>,
    /// EC2 requests sent so far, across envs.
    pub ec2_calls: aws::CallCounter,
    pub clock: Clock,
    /// Offerings EC2 was short of lately: launches go elsewhere meanwhile.
    pub shortages: crate::shortage::Shortages,
}

impl World {
    /// Builds the clients. Nothing is called yet: credentials are fetched on
    /// first use, so one env whose role cannot be assumed does not stop the
    /// others.
    pub async fn connect(config: Config, workdir: PathBuf) -> World {
        let base = aws::base_config(&config.aws.master_region, config.aws.timeout).await;
        let ec2_calls = aws::CallCounter::default();
        let mut ec2 = BTreeMap::new();
        let mut interruptions = BTreeMap::new();
        // One limiter per account and region, where EC2 keeps its buckets.
        let mut limiters: BTreeMap<(String, String), aws::limiter::Limiter> = BTreeMap::new();
        for (name, env) in &config.fleet.envs {
            let limiter = limiters
                .entry((env.account_id.clone(), env.region.clone()))
                .or_insert_with(|| aws::limiter::Limiter::new(config.aws.timeout))
                .clone();
            let env_conf = aws::env_config(&base, env, &config.aws.role_name).await;
            if let Some(queue) = &config.interruption_queue {
                // The env's own role and region: the queue is the env's.
                let client = Arc::new(aws_sdk_sqs::Client::new(&env_conf)) as Arc<dyn Queue>;
                let queue = crate::interruption::EventQueue::new(
                    client,
                    queue,
                    &env.account_id,
                    crate::interruption::visibility_timeout(config.run.pass_interval),
                );
                interruptions.insert(name.clone(), Arc::new(queue));
            }
            let mut ec2_conf = aws_sdk_ec2::config::Builder::from(&env_conf)
                .interceptor(ec2_calls.clone())
                .retry_classifier(aws::ec2::CapacityShortageIsFinal)
                // Each env its own retry quota: two envs in one region (other
                // accounts) would otherwise share the region's default one,
                // and one env's failures could spend the other's retries.
                .retry_partition(aws_sdk_ec2::config::retry::RetryPartition::new(format!("ec2-env-{name}")));
            if config.aws.rate_limiter {
                // The SDK leaves EC2's throttles to the limiter, which hears
                // every call's answer and retries them itself.
                ec2_conf = ec2_conf.retry_classifier(limiter.clone());
            }
            let client = Arc::new(aws_sdk_ec2::Client::from_conf(ec2_conf.build())) as Arc<dyn Ec2>;
            let client = if config.aws.rate_limiter {
                Arc::new(aws::limiter::Paced { inner: client, limiter }) as Arc<dyn Ec2>
            } else {
                client
            };
            ec2.insert(name.clone(), client);
        }
        let master_conf = base.to_builder().region(aws_config::Region::new(config.aws.master_region.clone())).build();
        let master_ec2 = Arc::new(aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&master_conf).interceptor(ec2_calls.clone()).build(),
        ));
        let sqs = config.sqs.as_ref().map(|sqs| {
            let region = aws_config::Region::new(sqs.region.clone());
            Arc::new(aws_sdk_sqs::Client::new(&base.to_builder().region(region).build())) as Arc<dyn Queue>
        });
        let jenkins = Arc::new(jenkins_cli(&config.jenkins, &workdir));
        // An earlier run's shortages: a cron run skips them too.
        let shortages = crate::shortage::Shortages::load(&workdir, SystemTime::now());
        World {
            config,
            workdir,
            jenkins,
            ec2,
            master_ec2,
            sqs,
            interruptions,
            ec2_calls,
            clock: Clock::System,
            shortages,
        }
    }

    /// The dump script's arguments for this run (see [`dump_args`]).
    pub fn dump_args(&self) -> Vec<String> {
        dump_args(&self.config.fleet, self.config.dry_run)
    }
}

/// The arguments of the dump script: every env's current AMI as
/// `ami:ENV=ami-…`, or `ami:ENV=` for none (the script judges "old AMI" by
/// the node's env, as the planner does, so an env without an AMI never
/// drains its agents), the bare ids too (a `--groovy` script of the
/// original's shape reads those and ignores the rest), then the idle
/// policy's settings as `key=value`.
pub fn dump_args(fleet: &FleetConfig, dry_run: bool) -> Vec<String> {
    let mut args: Vec<String> = fleet.envs.values().filter_map(|e| e.ami.clone()).collect();
    args.sort();
    args.dedup();
    // Every env, `ami:ENV=` when it has no AMI: the script then resolves a
    // node's env among the same envs as the planner.
    for env in fleet.envs.values() {
        args.push(format!("ami:{}={}", env.name, env.ami.as_deref().unwrap_or("")));
    }
    args.push(format!("idle_minutes={}", fleet.idle_minutes));
    args.push(format!("hourly_billing={}", fleet.hourly_billing));
    if dry_run {
        // The script then reports its idle policy without applying it.
        args.push("dry_run=true".to_string());
    }
    args
}

/// The CLI for `config`'s master, user and key.
pub fn jenkins_cli(config: &JenkinsConfig, workdir: &Path) -> JenkinsCli {
    JenkinsCli::new(config.cli, &config.url, &config.user, &config.id_rsa, workdir, config.timeout)
        .certificate_check(config.certificate_check)
        .output_limit(config.output_limit)
        .known_hosts(config.known_hosts.clone())
        .cli_jar(config.cli_jar.clone())
}
