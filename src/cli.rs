//! The command line: the original script's flags, spelled with underscores and
//! with the same defaults, so the operators' job line works unchanged. Only
//! parsing happens here; `config` validates and resolves.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// How Jenkins CLI commands reach the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliTransport {
    /// `java -jar jenkins-cli.jar -s URL -ssh -user USER -i KEY …`, the jar
    /// fetched from `URL/jnlpJars/jenkins-cli.jar` once per run.
    Jar,
    /// The same SSH protocol spoken natively (no Java needed).
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Keeps a Jenkins master supplied with EC2 build agents: starts or creates an
/// agent for each queued job whose label it knows, stops idle agents and
/// retires agents on an outdated AMI.
#[derive(Debug, Clone, Parser)]
// A repeated flag overrides the earlier one, as with the original's argparse.
#[command(name = "slave_manager", version, max_term_width = 100, args_override_self = true)]
pub struct Args {
    /// Jenkins URL (its HTTP answer names the SSH endpoint of the CLI).
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// Private key of the Jenkins user, for the CLI (OpenSSH or PEM format).
    #[arg(long = "id_rsa", alias = "id-rsa", value_name = "FILE")]
    pub id_rsa: PathBuf,

    /// The Jenkins account the key belongs to.
    #[arg(long = "jenkins_user", alias = "jenkins-user", env = "JENKINS_USER", value_name = "USER")]
    pub jenkins_user: Option<String>,

    /// Groovy script that prints the queue/node dump [default: the bundled
    /// jenkins/get_queue_jobs.groovy].
    #[arg(long, value_name = "FILE")]
    pub groovy: Option<PathBuf>,

    /// Comma list of ENV:ami-id; each ENV must exist in environment.json.
    #[arg(long = "ami_ids", alias = "ami-ids", value_name = "ENV:AMI,…")]
    pub ami_ids: String,

    /// Cap on on-demand agents per env (stopped ones count).
    #[arg(long = "max_num_of_slaves_in_env", default_value_t = 10, value_name = "N")]
    pub max_num_of_slaves_in_env: u32,

    /// Cap on spot agents per env.
    #[arg(long = "max_num_of_spot_slaves_in_env", default_value_t = 50, value_name = "N")]
    pub max_num_of_spot_slaves_in_env: u32,

    /// Number of passes before the run ends. There is no 55-minute stop any
    /// more: assumed-role credentials are refreshed before they expire.
    #[arg(long = "loop_counter", default_value_t = 300, value_name = "N")]
    pub loop_counter: u32,

    /// Upper bound on the run's length: no pass starts after it (the pass
    /// under way finishes, then the CSVs are written). The job runs every 5
    /// minutes and must end even when Jenkins hangs. Fractions allowed.
    #[arg(long = "max_minutes", default_value_t = 30.0, value_name = "MINUTES")]
    pub max_minutes: f64,

    /// Seconds to sleep between passes.
    #[arg(long = "pass_interval", default_value_t = 5.0, value_name = "SECONDS")]
    pub pass_interval: f64,

    /// Value of the EC2 `Name` tag that marks our agents; instances without
    /// it are never touched.
    #[arg(long = "slave_name", default_value = "jslave-in-house", value_name = "NAME")]
    pub slave_name: String,

    /// Account owning the `jenkins-requests` SQS queue (none: SQS off).
    #[arg(long = "aws_sqs_account_id", value_name = "ACCOUNT")]
    pub aws_sqs_account_id: Option<String>,

    /// Region of the SQS queue.
    #[arg(long = "aws_sqs_region", value_name = "REGION")]
    pub aws_sqs_region: Option<String>,

    /// Region of the master's security group.
    #[arg(long = "jenkins_master_region", default_value = "us-west-2", value_name = "REGION")]
    pub jenkins_master_region: String,

    /// Value of the `owner` tag on the agents we launch.
    #[arg(long = "owner_email", value_name = "EMAIL")]
    pub owner_email: String,

    /// Instance types a queue label may ask for: a comma list of globs
    /// (`m5*.*,c6i.large`), any size [default: t2, t3, t3a, m3, m4, m5*, m6*,
    /// m7*, c3, c4, c5*, c6*, c7* up to 4xlarge]. A label naming another type
    /// gets no agent.
    #[arg(long = "instance_types", value_name = "GLOB,…")]
    pub instance_types: Option<String>,

    /// Spot bid in USD per hour.
    #[arg(long = "max_spot_price", default_value = "0.2", value_name = "USD")]
    pub max_spot_price: String,

    /// Minutes an agent we created may sit idle before the dump script marks
    /// it offline for the manager to stop (SPEC A6).
    #[arg(long = "idle_minutes", default_value_t = 45, value_name = "MINUTES")]
    pub idle_minutes: u32,

    /// Also retire agents idle over 5 minutes once connected for 50 (the
    /// original's rule for EC2's hourly billing; per-second billing ended
    /// its point, so it is off unless asked).
    #[arg(long = "hourly_billing")]
    pub hourly_billing: bool,

    /// Rules the master's security group must keep, as PORT:CIDR words;
    /// repeated flags add up. Only these ports, the agents' port and the
    /// SCM rules the manager added are ever revoked.
    #[arg(long = "required_ip_list", num_args = 1.., action = clap::ArgAction::Append, value_name = "PORT:CIDR")]
    pub required_ip_list: Vec<String>,

    /// Terminate running agents that have not become Jenkins nodes this many
    /// minutes after launch (0: never).
    #[arg(long = "zombie_minutes", default_value_t = 0, value_name = "MINUTES")]
    pub zombie_minutes: u32,

    /// When EC2 has no spot capacity, launch on-demand instead (within the
    /// on-demand cap, whose room is reserved for it).
    #[arg(long = "spot_fallback")]
    pub spot_fallback: bool,

    /// Keep at least N stopped, set-up agents of LABEL (`dev=2`,
    /// `prod_shared=1`) so its next job gets a start, not a create; with
    /// `@HH-HH` only in those UTC hours (`dev=2@07-19`; `22-06` wraps
    /// midnight). Repeatable. Spot labels cannot stop, so are refused.
    #[arg(long = "warm", action = clap::ArgAction::Append, value_name = "LABEL=N[@HH-HH]")]
    pub warm: Vec<String>,

    /// Keep at least N idle executors of LABEL online (`dev=1`), so its next
    /// job waits for no agent; with `@HH-HH` only in those UTC hours. Short,
    /// a stopped agent of the label is started (a warm-pool member, or one
    /// the idle policy stopped), else one is created within the on-demand
    /// cap, after the queued items.
    /// Repeatable. Spot labels cannot be stopped and restarted, so are refused.
    #[arg(long = "spare", action = clap::ArgAction::Append, value_name = "LABEL=N[@HH-HH]")]
    pub spare: Vec<String>,

    /// SQS queue, of this name in each env's account and region, that an
    /// EventBridge rule fills with EC2's spot interruption warnings,
    /// rebalance recommendations and instance state changes (none: off).
    #[arg(long = "interruption_queue", value_name = "NAME")]
    pub interruption_queue: Option<String>,

    /// Host whose IPv4 addresses (their /24s) may reach the master on 443,
    /// for SCM webhooks; resolved with the system resolver every 3rd pass.
    #[arg(long = "scm_host", default_value = "github.com", value_name = "HOST")]
    pub scm_host: String,

    /// Leave the master's security group alone.
    #[arg(long = "skip_security_group")]
    pub skip_security_group: bool,

    /// Job built every 6th pass to make the master collect garbage (empty:
    /// never).
    #[arg(long = "gc_job", default_value = "util-slave-manager-garbage-collector", value_name = "JOB")]
    pub gc_job: String,

    /// Name of the SQS queue of build requests.
    #[arg(long = "sqs_queue", default_value = "jenkins-requests", value_name = "NAME")]
    pub sqs_queue: String,

    /// Comma list of Jenkins CLI commands an SQS message may run. Actions
    /// containing delete, groovy, install or node are refused regardless.
    #[arg(long = "sqs_actions", default_value = "build", value_name = "CMD,…")]
    pub sqs_actions: String,

    /// Comma list of globs (`*`, `?`) of the jobs an SQS message may build,
    /// matched against the full name (`team/app-*`) ignoring case, as
    /// Jenkins looks names up [default: any].
    #[arg(long = "sqs_jobs", value_name = "GLOB,…")]
    pub sqs_jobs: Option<String>,

    /// Comma list of who may send SQS requests: `SenderId`s as SQS reports
    /// them (an IAM user's unique id `AIDA…`, a role's `AROA…` for any of its
    /// sessions or `AROA…:SESSION` for one) or 12-digit account ids (what
    /// the account's root user sends) [default: anyone the queue admits].
    #[arg(long = "sqs_senders", value_name = "ID,…")]
    pub sqs_senders: Option<String>,

    /// environment.json: the envs, their accounts, subnets and groups.
    #[arg(long, default_value = "environment.json", value_name = "FILE")]
    pub environment: PathBuf,

    /// Jenkins CLI transport.
    #[arg(long, value_enum, default_value_t = CliTransport::Jar)]
    pub cli: CliTransport,

    /// Do not check the certificate of an https --url (the original's
    /// -noCertificateCheck, which is also passed to the jar; the jar's -ssh
    /// mode still checks it when it reads the SSH endpoint). By default it is
    /// checked against the system's CA store, or SSL_CERT_FILE/SSL_CERT_DIR.
    #[arg(long = "no_certificate_check")]
    pub no_certificate_check: bool,

    /// OpenSSH known_hosts file that lists Jenkins' SSH host key
    /// (`[host]:port ssh-rsa …`): the key must be listed there, besides
    /// matching the X-Instance-Identity header of URL/login.
    #[arg(long = "known_hosts", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Accept an http:// --url to a host other than this machine (anyone on
    /// the way can read and change what Jenkins says; by default refused).
    #[arg(long = "allow_insecure_http")]
    pub allow_insecure_http: bool,

    /// A jenkins-cli.jar already on disk (the master's own, e.g.
    /// /var/cache/jenkins/war/WEB-INF/lib/cli-VERSION.jar), run instead of
    /// downloading URL/jnlpJars/jenkins-cli.jar (--cli jar).
    #[arg(long = "cli_jar", value_name = "PATH")]
    pub cli_jar: Option<PathBuf>,

    /// Colour in the log: auto = only on a terminal; NO_COLOR is honoured.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Upper bound on one AWS call, retries included (each attempt gets a
    /// third of it).
    #[arg(long = "aws_timeout", default_value_t = 60, value_name = "SECONDS")]
    pub aws_timeout: u64,

    /// Upper bound on the EC2 calls one env has in flight at once while
    /// acting (envs act in parallel, each within its own bound).
    #[arg(long = "max_parallel_calls", default_value_t = 4, value_name = "N")]
    pub max_parallel_calls: usize,

    /// Send each env's EC2 requests unpaced even after EC2 throttles them
    /// (by default a client-side rate limiter per account and region slows
    /// down on `RequestLimitExceeded` and speeds up again on success).
    #[arg(long = "no_rate_limiter")]
    pub no_rate_limiter: bool,

    /// Upper bound on one Jenkins CLI command (the dump, a build).
    #[arg(long = "jenkins_timeout", default_value_t = 60, value_name = "SECONDS")]
    pub jenkins_timeout: u64,

    /// Upper bound on what one Jenkins CLI command may print, in MiB (on
    /// stdout, and on stderr); beyond it the command is stopped and counted
    /// as failed (for the dump: `jar_file_error`).
    #[arg(long = "max_cli_output_mb", default_value_t = 64, value_name = "MIB")]
    pub max_cli_output_mb: u64,

    /// Observe and decide once, print the plan as a table, change nothing
    /// (no AWS change, no Jenkins build or node marked, no marker written).
    #[arg(long = "dry_run")]
    pub dry_run: bool,

    /// Log the reasoning behind every decision.
    #[arg(long)]
    pub debug: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let base =
            ["slave_manager", "--url", "http://j/", "--id_rsa", "k", "--ami_ids", "d:ami-1", "--owner_email", "o"];
        Args::try_parse_from(base.iter().chain(extra)).unwrap()
    }

    #[test]
    fn repeated_required_ip_lists_add_up_while_other_flags_override() {
        let args =
            parse(&["--required_ip_list", "22:1.2.3.4/32", "--required_ip_list", "443:0.0.0.0/0", "80:0.0.0.0/0"]);
        assert_eq!(args.required_ip_list, ["22:1.2.3.4/32", "443:0.0.0.0/0", "80:0.0.0.0/0"]);
        let args = parse(&["--loop_counter", "3", "--loop_counter", "5"]);
        assert_eq!(args.loop_counter, 5, "as argparse: the last one counts");
    }
}
