//! The outside world a pass talks to: Jenkins through its CLI, and one EC2
//! client per env (each with its own assumed-role credentials).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::aws;
use crate::config::Config;
use crate::jenkins::JenkinsCli;

pub struct World {
    pub config: Config,
    /// Where markers, the CLI jar and the CSVs live (the job's workspace).
    pub workdir: PathBuf,
    pub jenkins: Arc<JenkinsCli>,
    pub ec2: BTreeMap<String, aws_sdk_ec2::Client>,
    /// EC2 in the master's own account and region (its security group).
    pub master_ec2: aws_sdk_ec2::Client,
    /// The build-request queue's region, when SQS is on.
    pub sqs: Option<aws_sdk_sqs::Client>,
    /// EC2 requests sent so far, across envs.
    pub ec2_calls: aws::CallCounter,
}

impl World {
    /// Builds the clients. Nothing is called yet: credentials are fetched on
    /// first use, so one env whose role cannot be assumed does not stop the
    /// others.
    pub async fn connect(config: Config, workdir: PathBuf) -> World {
        let base = aws::base_config(&config.master_region, config.aws_timeout).await;
        let ec2_calls = aws::CallCounter::default();
        let mut ec2 = BTreeMap::new();
        for (name, env) in &config.envs {
            let env_conf = aws::env_config(&base, env, &config.master).await;
            let ec2_conf = aws_sdk_ec2::config::Builder::from(&env_conf)
                .interceptor(ec2_calls.clone())
                .retry_classifier(aws::ec2::CapacityShortageIsFinal)
                .build();
            ec2.insert(name.clone(), aws_sdk_ec2::Client::from_conf(ec2_conf));
        }
        let master_conf = base.to_builder().region(aws_config::Region::new(config.master_region.clone())).build();
        let master_ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&master_conf).interceptor(ec2_calls.clone()).build(),
        );
        let sqs = config.sqs_region.as_ref().filter(|_| config.sqs_account_id.is_some()).map(|region| {
            aws_sdk_sqs::Client::new(&base.to_builder().region(aws_config::Region::new(region.clone())).build())
        });
        let jenkins = JenkinsCli::new(
            config.cli,
            &config.url,
            &config.jenkins_user,
            &config.id_rsa,
            &workdir,
            config.jenkins_timeout,
        )
        .certificate_check(config.certificate_check)
        .output_limit(config.cli_output_limit)
        .known_hosts(config.known_hosts.clone())
        .cli_jar(config.cli_jar.clone());
        World { config, workdir, jenkins: Arc::new(jenkins), ec2, master_ec2, sqs, ec2_calls }
    }

    /// The arguments of the dump script: every env's current AMI as
    /// `ami:ENV=ami-…`, or `ami:ENV=` for none (the script judges "old AMI" by
    /// the node's env, as the planner does, so an env without an AMI never
    /// drains its agents), the
    /// bare ids too (a `--groovy` script of the original's shape reads those
    /// and ignores the rest), then the idle policy's settings as `key=value`.
    pub fn dump_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self.config.envs.values().filter_map(|e| e.ami.clone()).collect();
        args.sort();
        args.dedup();
        // Every env, `ami:ENV=` when it has no AMI: the script then resolves a
        // node's env among the same envs as the planner.
        for env in self.config.envs.values() {
            args.push(format!("ami:{}={}", env.name, env.ami.as_deref().unwrap_or("")));
        }
        args.push(format!("idle_minutes={}", self.config.idle_minutes));
        args.push(format!("hourly_billing={}", self.config.hourly_billing));
        if self.config.dry_run {
            // The script then reports its idle policy without applying it.
            args.push("dry_run=true".to_string());
        }
        args
    }
}
